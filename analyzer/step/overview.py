"""The step-time breakdown of torch-tb-profiler's Overview (tb_plugin/torch_tb_profiler/profiler/overall_parser.py),
per step and averaged: each instant of a step goes to the first of kernel, memcpy, memset, CUDA runtime, data loader
and CPU execution whose events run then, else to "other", so the parts sum to the step's span.

Where it differs from tb-profiler: the steps are the ProfilerStep spans on the host (``Profile.step_spans``, the
spans of every other figure of the report), not stretched to the end of the GPU work they launched; collectives stay
in kernel and CPU execution (the report's Distributed section splits communication out); CUDA driver calls count
as runtime. As in tb-profiler, Python function events (``with_stack``) are not CPU execution: they would cover the
whole host side.
"""

from __future__ import annotations

from dataclasses import dataclass

from convdoctor.analyzer.step.columns import spans as event_spans
from convdoctor.analyzer.step.coverage import first_cover_times, union
from convdoctor.analyzer.step.gpu_use import GpuUse, gpu_use
from convdoctor.analyzer.trace.profile import EventKind, Kernel, Op, Profile

PARTS = ("kernel", "memcpy", "memset", "runtime", "data loader", "cpu execution", "other")  # in priority order
DEFINITIONS = ("Each instant of a step (its ProfilerStep span on the host) goes to the first part whose events run "
               "then: kernel, memcpy, memset, runtime (CUDA runtime calls), data loader (DataLoader __next__, "
               "DataPipe), cpu execution (operators and annotations); other is the rest. The parts "
               "sum to the step. GPU figures are on the device with the most kernel time, within the steps.")
MARKED = ("enumerate(Data", "ProfilerStep#")  # how the names of data loader events and step marks begin


@dataclass(frozen=True)
class Part:
    name: str  # one of PARTS
    time_us: float
    share: float  # of the step's span


@dataclass(frozen=True)
class StepBreakdown:
    step: int | None  # ProfilerStep number; None for the whole trace when it marks no steps
    span_us: float
    parts: tuple[Part, ...]  # in PARTS order; their times sum to span_us


@dataclass(frozen=True)
class Overview:
    """Where a step's time goes, host and device; the GPU's use on CUDA traces."""

    steps: tuple[StepBreakdown, ...]
    step_us: float  # mean span
    parts: tuple[Part, ...]  # means over the steps
    gpu: GpuUse | None
    gpu_missing: str | None  # why ``gpu`` is None
    verdict: str  # one line: where the time goes


def overview(profile: Profile) -> Overview | None:
    """The breakdown of each step; None for a trace without events."""
    spans = profile.step_spans
    if not spans:
        return None
    times = first_cover_times([union(*event_spans(events)) for events in _categories(profile)],
                              [(start, end) for _, start, end in spans])
    steps = []
    for (number, start, end), parts in zip(spans, times):
        span = end - start
        steps.append(StepBreakdown(number, span, tuple(Part(n, t, t / span if span else 0.0)
                                                       for n, t in zip(PARTS, parts))))
    mean_span = sum(s.span_us for s in steps) / len(steps)
    means = [sum(s.parts[i].time_us for s in steps) / len(steps) for i in range(len(PARTS))]
    parts = tuple(Part(n, t, t / mean_span if mean_span else 0.0) for n, t in zip(PARTS, means))
    use = gpu_use(profile)
    missing = None if use is not None else (
        "the trace has CUDA runtime launches but no kernel records" if profile.kernel_launches
        else "a CPU-only trace: no GPU events")
    return Overview(tuple(steps), mean_span, parts, use, missing, _verdict(parts, use))


def _categories(profile: Profile) -> list[list[Op] | list[Kernel]]:
    """Each part's events, in PARTS order (without "other")."""
    device: dict[EventKind, list[Kernel]] = {kind: [] for kind in EventKind}
    for kernel in profile.kernels:
        device[kernel.kind].append(kernel)
    loader, cpu = [], []
    for op in (*profile.ops_by_kind[EventKind.CPU_OP], *profile.ops_by_kind[EventKind.ANNOTATION]):
        name = op.name
        if not name.startswith(MARKED):
            cpu.append(op)
        elif _is_data_loader(name):
            loader.append(op)
        elif not name.startswith("ProfilerStep#"):
            cpu.append(op)
    return [device[EventKind.KERNEL], device[EventKind.MEMCPY], device[EventKind.MEMSET],
            profile.ops_by_kind[EventKind.RUNTIME], loader, cpu]


def _is_data_loader(name: str) -> bool:
    """tb-profiler's test of an operator or annotation: a DataLoader's ``__next__`` or a DataPipe."""
    return (name.startswith("enumerate(DataLoader)#") and name.endswith(".__next__")) or name.startswith(
        "enumerate(DataPipe)#")


def _verdict(parts: tuple[Part, ...], use: GpuUse | None) -> str:
    top = max(parts, key=lambda p: p.time_us)
    line = f"{top.name} takes {top.share:.0%} of the step, the largest part"
    if use is not None and use.utilization < 0.5:
        line += f"; kernels run {use.utilization:.0%} of the step: the GPU waits on the host more than it works"
    elif use is not None:
        line += f"; kernels run {use.utilization:.0%} of the step"
    return line
