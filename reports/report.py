"""The Report: everything the HTML, JSON and terminal reports show, computed by the pipeline before any of them
renders; the renderers format its fields and compute nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from convdoctor.analyzer.conv.compiled import CompiledLayer, CompiledView
from convdoctor.analyzer.conv.kernels import KernelTotals, LayerKernels
from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer
from convdoctor.analyzer.conv.roofline import LayerRoofline, Roofline
from convdoctor.analyzer.measure.results import FindingOutcome, Plan
from convdoctor.analyzer.step.hta import HtaViews
from convdoctor.analyzer.step.kernels import KernelRow, Kernels
from convdoctor.analyzer.step.memory import MemoryView
from convdoctor.analyzer.step.modules import ModulesView
from convdoctor.analyzer.step.operators import OperatorRow, Operators
from convdoctor.analyzer.step.overview import Overview

# 1.2: reliable, busy_machine, stopped_early, off_prediction; 1.3: the whole-step views overview, operators,
# kernels, modules (the nn.Module tree), memory (allocation curve, peak, top allocating operators) and hta (idle
# time, launches, queues, syncs, pageable copies, critical path; see report.schema.json); 1.4: compiled (what
# torch.compile did to each conv layer, from the compiled model's trace)
SCHEMA_VERSION = "1.4"

Row = TypeVar("Row")


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
class StepPart:
    """A part of the profiled step: convolutions, their layout conversions, or everything else."""

    name: str
    time_us: float  # per step
    share: float  # of the step time


@dataclass(frozen=True)
class ReportLayer:
    """A conv layer as the reports show it: the analysis's layer with its share of the step, its passes per step,
    its roofline and its device kernels."""

    layer: ConvLayer
    share: float  # of the step time
    forward_ms: float  # per step
    backward_ms: float  # per step
    roofline: LayerRoofline | None  # None where the layer has none (unknown peaks, FLOPs or bytes; another dtype)
    kernels: LayerKernels | None  # None on CPU traces


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


@dataclass(frozen=True)
class Shown(Generic[Row]):
    """The first rows of a table, as the HTML and the terminal show it, and how many it leaves to report.json."""

    rows: tuple[Row, ...]
    more: int


@dataclass(frozen=True)
class StepViews:
    """The whole-step views of torch-tb-profiler's panes: Overview, Operators, Kernels (None on a CPU trace)."""

    overview: Overview | None  # None for a trace without events
    operators: Operators
    kernels: Kernels | None
    operators_shown: Shown[OperatorRow]  # by name
    operators_listed: Shown[OperatorRow]  # by name, the few that `--show operators` prints
    shapes_shown: Shown[OperatorRow]  # by name and input shapes
    kernels_shown: Shown[KernelRow] | None


@dataclass
class Report:
    """One run's result, as the reports read it."""

    tool_version: str
    workload: WorkloadSummary
    analysis: ConvAnalysis
    outcomes: list[FindingOutcome]
    trace_files: list[str]
    logdir: str
    layers: list[ReportLayer]  # the analysis's layers, slowest first
    step_parts: list[StepPart]  # convolutions (less their layout conversions), layout conversions, everything else
    steps_from: str  # ProfilerStep, repeating conv calls (steps inferred), or whole trace (one step)
    rank: int | None  # the rank the trace says it is; None when it says none
    notes: list[str] = field(default_factory=list)  # the analysis's and the roofline's: what could not be computed
    skipped_rules: dict[str, str] = field(default_factory=dict)
    rule_problems: list[str] = field(default_factory=list)
    rule_docs: list[RuleDoc] = field(default_factory=list)  # of the rules with findings
    plan: Plan | None = None  # None when nothing was measured faster
    roofline: Roofline | None = None  # the device's peaks and each layer against them
    kernel_totals: KernelTotals | None = None  # all layers' conv kernels summed (GPU traces)
    busy_machine: BusyMachine | None = None  # set when measurements were taken under contention
    modules: ModulesView | None = None  # the nn.Module tree (empty, with a note, without module scopes)
    memory: MemoryView | None = None  # memory over the step (empty, with a note, without memory events)
    views: StepViews | None = None  # Overview, Operators, Kernels
    hta: HtaViews | None = None  # HTA-class views of a GPU trace; None with ``hta_reason`` otherwise
    hta_reason: str | None = None  # why there are no HTA-class views
    compiled: CompiledView | None = None  # what torch.compile did per conv layer, when a compiled trace was taken
    compiled_shown: Shown[CompiledLayer] | None = None  # its slowest layers, as the terminal lists them
