"""Profile a model compiled by torch.compile, and record which nn.Module each of Inductor's kernel calls came from.

Inductor's provenance tracking (``config.trace.provenance_tracking_level = 1``) fills a table while it generates a
graph's code: ``kernel:handle`` -> the post-grad FX nodes the call computes, the handles numbered in the order the
generated code calls the kernels. Each post-grad node keeps the ``nn_module_stack`` of the code it came from. A
post-grad custom pass (``config.post_grad_custom_post_pass``) keeps both while the graph compiles: the nodes' modules
and the table itself, which Inductor fills after the pass and resets when the compile ends. The eager model's conv
calls and their shapes are recorded too: ``analyzer.conv.compiled`` checks each extern conv call's provenance against
the shapes its trace event records, and matches it by order and shapes where provenance is missing or wrong
(freezing's mkldnn conv + ReLU/add fusions). Caches are off while it compiles: a cache hit would skip the code
generation that fills the table. ``cpp.enable_kernel_profile`` makes each of Inductor's C++ kernels a profiler event
(``graph_0_cpp_fused_relu_0``); without it they are invisible in a trace.
"""

from __future__ import annotations

import contextlib
import functools
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch._inductor import config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.profiler import profile, schedule, tensorboard_trace_handler

from convdoctor.analyzer.capture.contention import QuietPolicy, cpu_jiffies, other_cores_busy
from convdoctor.analyzer.capture.recording import (
    WAIT_STEPS,
    WARMUP_STEPS,
    PendingTraces,
    environment,
    metadata_json,
    profiler_activities,
    quiet_profiler,
    set_aside,
    unprofiled_step_us,
    written_traces,
)
from convdoctor.analyzer.capture.workload import Workload, make_step, synchronize
from convdoctor.analyzer.trace.inductor_record import INDUCTOR_KEY
from convdoctor.analyzer.trace.profile import METADATA_KEY

COMPILED_WORKER = "compiled"  # the compiled trace's worker name, beside the eager run's in the log dir
COMPILED_RUN_SUFFIX = "-compiled"
ROOT_ACCESS = re.compile(r"^L\['[^']*'\]")  # nn_module_stack paths start at the compiled frame's local: L['self']
Shapes = tuple[tuple[int, ...], tuple[int, ...]]  # a conv call's input shape and weight shape


@dataclass
class _Graph:
    """One compiled graph: its post-grad nodes' modules, and Inductor's provenance table (filled once its code is
    made)."""

    modules: dict[str, str | None]  # node name -> the innermost module of its nn_module_stack (a qualified name)
    provenance: dict[str, list[str]]


class _Observer(CustomGraphPass):
    """A post-grad pass that changes nothing: it keeps each compiled graph's nodes and provenance table."""

    def __init__(self, modules: dict[str, str]) -> None:
        self.modules = modules
        self.graphs: list[_Graph] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        from torch._inductor import debug

        modules = {node.name: _module(node, self.modules) for node in graph.nodes}
        # Inductor rebinds this table when a compile starts and fills it while it generates this graph's code.
        self.graphs.append(_Graph(modules, debug._inductor_triton_kernel_to_post_grad_node_info))

    def uuid(self) -> None:
        return None  # never cached: the table is filled only when the code is generated


@contextlib.contextmanager
def observed_compiles(modules: dict[str, str]) -> Iterator[_Observer]:
    """Inductor settings under which every compile records its graphs (``_Observer``) and its C++ kernels show in
    a trace; ``modules``: the model's module names and classes, which nn_module_stack paths are read against."""
    observer = _Observer(modules)
    with inductor_config.patch({"trace.provenance_tracking_level": 1, "cpp.enable_kernel_profile": True,
                                "force_disable_caches": True, "post_grad_custom_post_pass": observer}):
        yield observer


def _module(node: torch.fx.Node, modules: dict[str, str]) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = ROOT_ACCESS.sub("", str(list(stack.values())[-1][0]))
    path = re.sub(r"\._modules\['([^']*)'\]|\['([^']*)'\]|\[(\d+)\]", lambda m: "." + next(g for g in m.groups() if g),
                  path).lstrip(".")
    return path if path in modules else None


@dataclass(frozen=True)
class EagerCalls:
    """What one eager step calls: every leaf module in call order, and each conv call's input and weight shapes."""

    leaves: list[str]
    convs: list[tuple[str, Shapes]]


def eager_calls(workload: Workload) -> EagerCalls:
    """The leaf modules and conv calls of a step of the eager workload, in call order."""
    calls = EagerCalls([], [])

    def hook(module: nn.Module, args: tuple[Any, ...], name: str) -> None:
        calls.leaves.append(name)
        if isinstance(module, nn.modules.conv._ConvNd) and args and isinstance(args[0], torch.Tensor):
            calls.convs.append((name, (tuple(args[0].shape), tuple(module.weight.shape))))

    handles = [module.register_forward_pre_hook(functools.partial(hook, name=name))
               for name, module in workload.model.named_modules() if name and not any(module.children())]
    try:
        make_step(workload)()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def call_sites(graph: _Graph) -> list[list[Any]]:
    """The graph's kernel calls in code order, as the trace metadata keeps them: [kernel, [module names]]."""
    ordered = sorted(graph.provenance.items(), key=lambda item: int(item[0].rpartition(":")[2] or 0))
    return [[key.rpartition(":")[0] or key,
             list(dict.fromkeys(m for name in nodes if (m := graph.modules.get(name)) is not None))]
            for key, nodes in ordered]


def _graphs_entry(observer: _Observer, eager: EagerCalls) -> dict[str, Any]:
    """The model's modules, its eager step's calls and each compiled graph's kernel calls, as the metadata keeps them
    (``inductor_record.INDUCTOR_KEY``)."""
    return {"modules": observer.modules, "eager_order": eager.leaves,
            "eager_convs": [[name, list(shapes[0]), list(shapes[1])] for name, shapes in eager.convs],
            "graphs": [call_sites(graph) for graph in observer.graphs]}


def record_compiled(workload: Workload, compile_: Callable[[Workload], Workload], compiled_by: str, logdir: Path,
                    run_name: str, *, steps: int = 3, eager_unprofiled_step_us: float | None = None,
                    quiet: QuietPolicy | None = None) -> PendingTraces:
    """Profile ``steps`` steps of a copy of the workload compiled by ``compile_`` into a scratch folder under
    ``logdir`` (worker ``COMPILED_WORKER``), recording each compiled graph's kernel calls and their modules in the
    trace's metadata (``INDUCTOR_KEY``). ``quiet``: the run's rule for busy machines, which the compiled step is
    timed under. Nothing under ``logdir/run_name`` changes until it is published."""
    run = workload.copy()
    modules = {name: type(module).__name__ for name, module in run.model.named_modules()}
    eager = eager_calls(run)
    compiled = compile_(run)
    step = make_step(compiled)
    activities = profiler_activities(run.device)
    logdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".capture-", dir=logdir))
    target = logdir / run_name
    try:
        torch._dynamo.reset()  # compile here, under observation, never from code compiled before
        with observed_compiles(modules) as observer, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*force_disable_caches")
            started = time.perf_counter()
            step()
            synchronize(run.device)
            compile_s = time.perf_counter() - started
            if quiet is not None:
                quiet.settle("timing the compiled model")
            before, started = cpu_jiffies(), time.perf_counter()
            step_us = unprofiled_step_us(step, run.device)
            busy = other_cores_busy(before, cpu_jiffies(), time.perf_counter() - started)
            settings = replace(environment(run, quiet), unprofiled_step_us=step_us).to_metadata()
            settings[INDUCTOR_KEY] = {
                "compiled_by": compiled_by, "freezing": bool(inductor_config.freezing),
                "compile_s": round(compile_s, 3), "unprofiled_step_us": round(step_us, 3),
                "eager_unprofiled_step_us": eager_unprofiled_step_us,
                "timed_under_load_cores": round(busy, 2) if quiet is not None and quiet.is_contended(busy) else None,
                **_graphs_entry(observer, eager)}
            recorded = metadata_json(settings)
            sched = schedule(wait=WAIT_STEPS, warmup=WARMUP_STEPS, active=steps, repeat=1)
            handler = tensorboard_trace_handler(str(scratch), worker_name=COMPILED_WORKER)
            with quiet_profiler(), profile(activities=activities, schedule=sched, on_trace_ready=handler,
                                           record_shapes=True) as profiler:
                for _ in range(WAIT_STEPS + WARMUP_STEPS + steps):
                    profiler.add_metadata_json(METADATA_KEY, recorded)
                    step()
                    synchronize(run.device)
                    profiler.step()
        written = written_traces(scratch, "torch.profiler wrote no trace of the compiled model")
    except BaseException:
        set_aside(scratch, target)
        raise
    return PendingTraces(scratch=scratch, target=target, names=written)
