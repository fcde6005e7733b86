"""The Report: everything the HTML, JSON and terminal reports show, computed by the pipeline before any of them
renders; the renderers format its fields and compute nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from convdoctor.analyzer.conv.kernels import KernelTotals, LayerKernels
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.analyzer.conv.roofline import Roofline
from convdoctor.analyzer.measure.results import FindingOutcome, Plan


@dataclass(frozen=True)
class WorkloadSummary:
    """What was profiled, where and how."""

    model_file: str
    device: str
    device_name: str
    mode: str
    batch_size: int | None
    dtype: str
    steps: int
    torch_version: str
    threads: int | None  # None when the trace does not say
    allocator: str | None = None  # the host allocator the profiled process ran with; None when the trace does not say
    heap_kept: bool = False  # glibc's thresholds fixed while tracing and measuring (host_allocator.keep_heap)


@dataclass(frozen=True)
class RuleDoc:
    """A rule's documentation, for the report's rule section."""

    id: str
    name: str
    summary: str
    sections: list[tuple[str, str]]  # (heading, body)


@dataclass(frozen=True)
class BusyMachine:
    """Why measurements of this run have no verdict: other processes kept the cores it timed on busy, through the
    run's wait for quiet (``capture.contention.QuietPolicy``)."""

    unreliable: int  # measurements without a verdict
    measured: int  # measurements taken
    busiest: str  # what kept the cores busy
    waited_s: float  # how long the run waited for quiet
    wait_s: float  # how long it could wait (--wait-quiet)


@dataclass
class Report:
    """One run's result, as the reports read it."""

    tool_version: str
    workload: WorkloadSummary
    analysis: ConvAnalysis
    outcomes: list[FindingOutcome]
    trace_files: list[str]
    logdir: str
    skipped_rules: dict[str, str] = field(default_factory=dict)
    rule_problems: list[str] = field(default_factory=list)
    rule_docs: list[RuleDoc] = field(default_factory=list)  # of the rules with findings
    plan: Plan | None = None  # None when nothing was measured faster
    roofline: Roofline | None = None  # the device's peaks and each layer against them
    layer_kernels: dict[str, LayerKernels] = field(default_factory=dict)  # each layer's device kernels (GPU traces)
    kernel_totals: KernelTotals | None = None  # all layers' conv kernels summed (GPU traces)
    busy_machine: BusyMachine | None = None  # set when measurements were taken under contention


def trace_summary(analysis: ConvAnalysis, trace: Path) -> WorkloadSummary:
    """What a trace captured elsewhere tells of its workload; what it does not tell is 'unknown'.

    Traces that convdoctor captured carry their environment; others are read from their events.
    """
    profile = analysis.profile
    recorded = profile.environment
    props = profile.device_properties
    first = analysis.layers[0] if analysis.layers else None
    on_gpu = profile.has_device_events or profile.kernel_launches > 0  # a GPU run without kernel records too
    return WorkloadSummary(
        model_file=str(trace),
        device=recorded.device or ("cuda" if on_gpu else "cpu"),
        device_name=recorded.device_name
        or (str(props[0].get("name", "unknown")) if on_gpu and props else "unknown"),
        mode=analysis.mode,
        batch_size=(recorded.batch_size if recorded.recorded
                    else first.input_shape[0] if first and first.input_shape else None),
        dtype=recorded.dtype or (first.dtype if first else "unknown"),
        steps=profile.step_count,
        torch_version=recorded.torch_version or "unknown (not recorded in the trace)",
        threads=recorded.threads,
        allocator=recorded.allocator,
        heap_kept=recorded.heap_kept is True,
    )
