"""Run a workload under torch.profiler and keep its Kineto traces in a TensorBoard log dir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import (
    ProfilerActivity,
    profile,
    schedule,
    tensorboard_trace_handler,
)

from convdoctor.analyzer.capture.contention import QuietPolicy
from convdoctor.analyzer.capture.hardware import device_name, low_precision_environment, recorded_peaks
from convdoctor.analyzer.capture.host_allocator import (
    allocator,
    faults_per_step,
    heap_kept,
    keep_heap,
)
from convdoctor.analyzer.capture.workload import (
    Workload,
    describe_exception,
    make_step,
    synchronize,
    time_step,
)
from convdoctor.analyzer.trace.environment import RecordedEnvironment
from convdoctor.analyzer.trace.module_record import MODULES_KEY
from convdoctor.analyzer.trace.module_scope import scope_name
from convdoctor.analyzer.trace.probe_record import (
    LAYOUT_PROBE_KEY,
    LeafLayoutTime,
    recordable,
)
from convdoctor.analyzer.trace.profile import METADATA_KEY
from convdoctor.analyzer.trace.reader import TRACE_SUFFIXES
from convdoctor.errors import ConvDoctorError, InputMismatchError, ModelFileError

WAIT_STEPS = 1
WARMUP_STEPS = 1
# Before the profiler starts, UNPROFILED_WARM_STEPS steps (lazy init, first allocations) and FAULT_STEPS whose page
# faults are counted with the process's own allocator; then the heap is kept (settled_allocator), and the copy it
# records runs UNPROFILED_WARM_STEPS again and UNPROFILED_TIMED_STEPS timed steps: their median is the step as the
# harness times it (``RecordedEnvironment.unprofiled_step_us``).
UNPROFILED_WARM_STEPS = 2
UNPROFILED_TIMED_STEPS = 3
FAULT_STEPS = 1  # warm steps whose page faults are counted, before the heap is kept
INTERRUPTED_DIR = "interrupted"  # beside the log dir: traces of runs that did not finish


class ModuleScopes:
    """Hooks that wrap every submodule call in a record_function named by its qualified name.

    While installed, ``active`` is the stack of qualified names being called, so that an exception in
    the forward can be charged to the innermost module; ``output_bytes`` holds the bytes of the tensors each
    module's first call returned.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.active: list[str] = []
        self.output_bytes: dict[str, int] = {}
        self._open: list[Any] = []
        self._handles: list[Any] = []

    def __enter__(self) -> "ModuleScopes":
        for name, module in self.model.named_modules():
            label = scope_name(name, type(module).__name__)
            self._handles.append(module.register_forward_pre_hook(self._enter_hook(name, label)))
            self._handles.append(module.register_forward_hook(self._exit_hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        while self._open:
            self._pop()

    def _enter_hook(self, name: str, label: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            scope = record_function(label)
            scope.__enter__()
            self._open.append(scope)
            self.active.append(name)

        return hook

    def _exit_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._open:
            if self.active[-1] not in self.output_bytes:
                self.output_bytes[self.active[-1]] = tensor_bytes(output)
            self._pop()

    def _pop(self) -> None:
        self._open.pop().__exit__(None, None, None)
        self.active.pop()


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a module's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    return 0


def module_record(model: nn.Module, output_bytes: dict[str, int]) -> dict[str, list[int | None]]:
    """Each module's parameters and first call's output bytes, keyed by module scope name (``module_record``)."""
    return {scope_name(name, type(module).__name__): [sum(p.numel() for p in module.parameters()),
                                                      output_bytes.get(name)]
            for name, module in model.named_modules()}


def check_fits(workload: Workload) -> None:
    """Run one step; when the inputs do not fit, name the module that failed and the error's shapes."""
    run = workload.copy()
    step = make_step(run)
    failed_in: list[str] = []
    try:
        with ModuleScopes(run.model) as scopes:
            try:
                step()
            except Exception:
                failed_in.extend(scopes.active)  # hooks of the modules that raised never closed
                raise
        synchronize(workload.device)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        where = failed_in[-1] if failed_in and failed_in[-1] else "the model's forward"
        raise InputMismatchError(
            f"{workload.source}: the example inputs do not fit the model: in {where}: {describe_exception(exc)}; "
            "fix get_inputs() (or --batch-size) to match what the model expects"
        ) from exc
    except ConvDoctorError:
        raise
    except (Exception, SystemExit) as exc:  # the user's forward may raise anything, sys.exit() included
        raise ModelFileError(f"{workload.source}: the model's forward raised {describe_exception(exc)}; "
                             "fix the model so that one step runs") from exc


def environment(workload: Workload, quiet: QuietPolicy | None = None) -> RecordedEnvironment:
    """The settings that decide conv speed but that a trace does not otherwise record, and the device's peaks
    (peak_flops in FLOP/s, peak_bandwidth in bytes/s, peaks_source: measured on a CPU, once per process and
    thread count; from the datasheet on a GPU) for the roofline of an offline `analyze`."""
    device = workload.device
    peaks = recorded_peaks(device, workload.dtype, quiet)
    return RecordedEnvironment(
        torch_version=torch.__version__,
        model_file=workload.source,
        mode=workload.mode.value,
        batch_size=workload.batch_size,
        dtype=workload.dtype,
        device=str(device),
        device_name=device_name(device),
        allocator=allocator(),
        threads=torch.get_num_threads(),
        available_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_deterministic=torch.backends.cudnn.deterministic,
        mkldnn_enabled=torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),  # the vector ISA ATen/oneDNN kernels use
        peak_flops=peaks.peak_flops_per_s,
        peak_bandwidth=peaks.bandwidth_bytes_per_s,
        peaks_source=peaks.source.value,
        peaks_dtype=peaks.dtype,
        peaks_description=peaks.description,
        peaks_others_busy=peaks.others_busy,
        **low_precision_environment(),  # native bfloat16/float16 on this CPU (CD119, CD121)
        **_ddp_environment(workload),
    )


def _ddp_environment(workload: Workload) -> dict[str, Any]:
    """The job's shape and DistributedDataParallel settings, for a workload that runs in a worker of a job."""
    if workload.ddp is None or not torch.distributed.is_initialized():
        return {}
    return {
        "rank": torch.distributed.get_rank(),
        "world_size": torch.distributed.get_world_size(),
        "backend": str(torch.distributed.get_backend()),
        "ddp_bucket_cap_mb": workload.ddp.bucket_cap_mb,
        "ddp_gradient_as_bucket_view": workload.ddp.gradient_as_bucket_view,
        "ddp_static_graph": workload.ddp.static_graph,
        "ddp_find_unused_parameters": workload.ddp.find_unused_parameters,
    }


def metadata_json(values: dict[str, Any]) -> str:
    """JSON that Kineto copies into the trace intact: it writes the text unescaped and turns backslashes into '/',
    so '"' and '\\' are dropped from strings (keys and nested values too) and non-ASCII text is kept as itself
    rather than as \\u escapes."""
    return json.dumps(_kineto_safe(values), ensure_ascii=False)


def _kineto_safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace('"', "").replace("\\", "/")
    if isinstance(value, dict):
        return {_kineto_safe(k): _kineto_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_kineto_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class PendingTraces:
    """The traces of a finished capture, held in a scratch folder until the run that made them is complete.

    ``publish`` moves them to ``logdir/run_name`` (replacing that run's previous traces); ``set_aside`` moves them
    to a folder whose name says the run did not finish, so they never mix with a complete run's files.
    """

    scratch: Path
    target: Path
    names: tuple[str, ...]

    @property
    def files(self) -> list[Path]:
        """Where the traces are now (to be read before publishing)."""
        return [self.scratch / name for name in self.names]

    @property
    def published_files(self) -> list[Path]:
        """Where the traces will be once published."""
        return [self.target / name for name in self.names]

    def publish(self) -> list[Path]:
        """Move the traces into the log dir, replacing the previous traces of the same run."""
        if self.target.exists():
            shutil.rmtree(self.target)
        self.scratch.rename(self.target)
        return self.published_files

    def set_aside(self) -> Path | None:
        """Keep the traces of a run that did not finish under ``<logdir>/../interrupted/<run>``; None if none."""
        return set_aside(self.scratch, self.target)


def settled_allocator(step: Callable[[], Any]) -> dict[str, Any]:
    """Count the page faults of a warm ``step`` with the process's own allocator (CD118's evidence), then keep
    glibc's heap for the rest of the process (``host_allocator.keep_heap``); what the trace records of both."""
    for _ in range(UNPROFILED_WARM_STEPS):
        step()
    recorded: dict[str, Any] = {}
    if not heap_kept():  # once it is kept, the faults are no longer the process's own allocator's
        recorded["minor_faults_per_step"] = faults_per_step(step, FAULT_STEPS)
    recorded["heap_kept"] = keep_heap()
    return recorded


def record(workload: Workload, logdir: Path, run_name: str, *, steps: int = 3, worker_name: str = "worker0",
           layout_probe: dict[str, LeafLayoutTime] | None = None, allocator_record: dict[str, Any] | None = None,
           quiet: QuietPolicy | None = None) -> PendingTraces:
    """Profile ``steps`` steps of a copy of the workload into a scratch folder under ``logdir``.

    ``worker_name`` starts each trace file's name (TensorBoard's worker); a rank of a job puts its rank in it.
    ``layout_probe`` (``time_leaf_layouts`` of the workload), when given, is recorded in the traces' metadata.
    ``allocator_record``: ``settled_allocator``'s, when the caller settled the allocator before (the layout probe
    runs with the heap kept too); else it is settled here. ``quiet``: the run's rule for busy machines, which the
    CPU peaks are measured under.

    Nothing under ``logdir/run_name`` changes until the result is published. A capture that fails or is
    interrupted leaves what the profiler had written set aside as interrupted (see PendingTraces).
    """
    run = workload.copy()
    step = make_step(run)
    activities = profiler_activities(run.device)
    logdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".capture-", dir=logdir))
    target = logdir / run_name
    try:
        recorded_environment = replace(  # before the profiler starts: measuring peaks is no part of a step
            environment(run, quiet), **(settled_allocator(step) if allocator_record is None else allocator_record),
            unprofiled_step_us=unprofiled_step_us(step, run.device))
        settings: dict[str, Any] = recorded_environment.to_metadata()
        if layout_probe:
            settings[LAYOUT_PROBE_KEY] = recordable(layout_probe, run.model)
        recorded = metadata_json(settings)
        sched = schedule(wait=WAIT_STEPS, warmup=WARMUP_STEPS, active=steps, repeat=1)
        handler = tensorboard_trace_handler(str(scratch), worker_name=worker_name)
        with quiet_profiler(), ModuleScopes(run.model) as scopes, profile(
            activities=activities, schedule=sched, on_trace_ready=handler, record_shapes=True, profile_memory=True
        ) as profiler:
            for index in range(WAIT_STEPS + WARMUP_STEPS + steps):
                if index == WAIT_STEPS:  # the first step (not recorded) gave each module's output size
                    settings[MODULES_KEY] = module_record(run.model, scopes.output_bytes)
                    recorded = metadata_json(settings)
                profiler.add_metadata_json(METADATA_KEY, recorded)  # kept only by the session that records
                step()
                synchronize(run.device)
                profiler.step()
        written = written_traces(scratch, "torch.profiler wrote no trace")
    except BaseException:
        set_aside(scratch, target)
        raise
    return PendingTraces(scratch=scratch, target=target, names=written)


def profiler_activities(device: torch.device) -> list[ProfilerActivity]:
    """What torch.profiler records for a step on ``device``: the host, and CUDA's kernels on a GPU."""
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def written_traces(scratch: Path, missing: str) -> tuple[str, ...]:
    """The trace files the profiler wrote into ``scratch``, by name; RuntimeError(``missing``) when there are none."""
    written = tuple(sorted(p.name for p in scratch.iterdir() if p.name.endswith(TRACE_SUFFIXES)))
    if not written:
        raise RuntimeError(missing)
    return written


def unprofiled_step_us(step: Callable[[], Any], device: torch.device) -> float:
    """The median time of a step without the profiler, in µs, after a few steps that warm it up."""
    for _ in range(UNPROFILED_WARM_STEPS):
        step()
    return statistics.median(time_step(step, device) for _ in range(UNPROFILED_TIMED_STEPS)) * 1e6


def capture(workload: Workload, logdir: Path, run_name: str, *, steps: int = 3, worker_name: str = "worker0"
            ) -> list[Path]:
    """Profile ``steps`` steps of a copy of the workload; return the trace files written under logdir/run_name."""
    return record(workload, logdir, run_name, steps=steps, worker_name=worker_name).publish()


def set_aside(scratch: Path, target: Path) -> Path | None:
    if not scratch.exists():
        return None
    if not any(scratch.iterdir()):
        scratch.rmdir()
        return None
    kept = target.parent.parent / INTERRUPTED_DIR / target.name
    if kept.exists():
        shutil.rmtree(kept)
    kept.parent.mkdir(parents=True, exist_ok=True)
    scratch.rename(kept)
    return kept


@contextlib.contextmanager
def quiet_profiler() -> Iterator[None]:
    """Hide the profiler's own chatter (C++ lines on stderr, cycle warnings) unless the capture fails."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
        with tempfile.TemporaryFile(mode="w+b") as sink:
            saved = os.dup(2)
            os.dup2(sink.fileno(), 2)
            failed = False
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                if failed:
                    sink.seek(0)
                    os.write(2, sink.read()[-4000:])
