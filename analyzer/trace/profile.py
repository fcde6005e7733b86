"""The typed view of a Kineto trace that every later stage reads: ops, their nesting, module scopes, kernels."""

from __future__ import annotations

import bisect
import enum
import functools
import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterator

import msgspec

from convdoctor.analyzer.trace.environment import RecordedEnvironment
from convdoctor.analyzer.trace.module_scope import ModuleScope


class EventKind(str, enum.Enum):
    """What a trace event is, whatever the spelling of its category in the trace's PyTorch version.

    Loops over every event read the members they compare with into locals first: a member read from the class
    costs about four times a local's (76 ns against 19 ns on Python 3.11), 20 ms per pass at 355k events.
    """

    CPU_OP = "cpu_op"
    ANNOTATION = "user_annotation"
    PYTHON = "python_function"
    RUNTIME = "cuda_runtime"
    KERNEL = "kernel"
    MEMCPY = "gpu_memcpy"
    MEMSET = "gpu_memset"
    GPU_ANNOTATION = "gpu_user_annotation"


METADATA_KEY = "convdoctor"  # top-level key of the trace JSON where capture records its environment


# Events that may open a module scope (module_scope.parse_scope_name): convdoctor's annotations, PyTorch's
# python_function module events.
SCOPE_KINDS = frozenset({EventKind.ANNOTATION, EventKind.PYTHON})
HOST_KINDS = frozenset({EventKind.CPU_OP, EventKind.ANNOTATION, EventKind.PYTHON, EventKind.RUNTIME})
DEVICE_KINDS = frozenset({EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET})


class Op(msgspec.Struct, eq=False):
    """A host-side event (operator, annotation, python function or CUDA runtime call) with its nesting.

    A msgspec struct, not a dataclass: a trace makes hundreds of thousands, and its constructor is about twice as
    fast. Events compare and hash by identity.
    """

    name: str
    kind: EventKind
    pid: str
    tid: str
    ts_us: float
    dur_us: float
    external_id: int | None = None
    correlation: int | None = None
    sequence_number: int | None = None
    input_dims: list[Any] = []  # a new list for each event, as every default of [] below
    input_types: list[str] = []
    input_strides: list[Any] = []
    concrete_inputs: list[Any] = []
    parent: Op | None = None
    children: list[Op] = []
    kernels: list[Kernel] = []
    scope: ModuleScope | None = None  # set on module-scope annotations themselves
    module: ModuleScope | None = None  # the innermost module scope this event runs in
    module_call: Op | None = None  # the annotation of that module call
    # A collective's size as c10d's ``record_param_comms`` records it (PyTorch 2.x; None elsewhere): its name
    # ("allreduce", "broadcast"...), the elements of its input, and their dtype as c10d spells it ("Float"...).
    collective: str | None = None
    message_elements: int | None = None
    message_dtype: str | None = None

    def __repr__(self) -> str:
        return _repr(self, OP_LINKS)

    @property
    def end_us(self) -> float:
        return self.ts_us + self.dur_us

    def descendants(self) -> Iterator[Op]:
        """Every event nested under this one, depth first."""
        stack = self.children[::-1]
        while stack:
            op = stack.pop()
            yield op
            stack.extend(reversed(op.children))

    def ancestors(self) -> Iterator[Op]:
        """The events this one is nested in, innermost first."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def device_time_us(self) -> float:
        """Time of the GPU work launched by this event and the events nested in it."""
        own = sum(k.dur_us for k in self.kernels)
        nested = 0  # summed in the order of descendants() (inlined here: it is called for many events)
        stack = self.children[::-1]
        while stack:
            op = stack.pop()
            if op.kernels:
                nested += sum(k.dur_us for k in op.kernels)
            if op.children:
                stack.extend(reversed(op.children))
        return own + nested


class Kernel(msgspec.Struct, eq=False):
    """A device-side event: a kernel, memcpy or memset, linked to the host event that launched it.

    Kernels also carry their launch configuration and Kineto's occupancy estimate, where the trace has them (memcpy
    and memset never do). Kineto computes ``est_occupancy_pct`` (libkineto/src/DeviceProperties.cpp,
    ``kernelOccupancy``) as min(blocks_per_sm, blocks the CUDA occupancy calculator fits on one SM) x threads per
    block / max threads per SM: the theoretical occupancy capped by the grid size, not a measured achieved one.
    """

    name: str
    kind: EventKind
    device: int | None
    stream: int | None
    ts_us: float
    dur_us: float
    correlation: int | None = None
    launcher: Op | None = None  # the innermost operator around the launching call
    # Launch configuration and Kineto's occupancy estimate (kernels only; None where the trace omits them).
    grid: tuple[int, int, int] | None = None  # blocks in x, y, z
    block: tuple[int, int, int] | None = None  # threads per block in x, y, z
    registers_per_thread: int | None = None
    shared_memory_bytes: int | None = None  # static + dynamic shared memory per block
    blocks_per_sm: float | None = None  # blocks in the grid / SMs on the device; < 1 leaves SMs without work
    warps_per_sm: float | None = None  # warps in the grid / SMs: a launch size, not the resident warps
    est_occupancy_pct: float | None = None  # "est. achieved occupancy %", 0..100: see the class docstring

    @property
    def end_us(self) -> float:
        return self.ts_us + self.dur_us

    @property
    def threads_per_block(self) -> int | None:
        return self.block[0] * self.block[1] * self.block[2] if self.block is not None else None

    def __repr__(self) -> str:
        return _repr(self, KERNEL_LINKS)


class MemoryEvent(msgspec.Struct, eq=False, gc=False):
    """A ``[memory]`` instant (recorded with ``profile_memory=True``): one allocation (``bytes`` > 0) or free (< 0)
    by the thread ``pid``/``tid``, on a device, with the allocator's totals after it where the trace has them
    (PyTorch 1.9 and before write ``Bytes`` only)."""

    ts_us: float
    pid: str
    tid: str
    bytes: int
    total_allocated: int | None = None  # bytes allocated on the device after this event
    total_reserved: int | None = None  # bytes the caching allocator holds on the device after it
    device_type: int | None = None  # c10::DeviceType: 0 CPU, 1 CUDA...
    device_id: int | None = None  # -1 for the CPU


# The links each repr leaves out: printing one event must not print the whole trace.
OP_LINKS = frozenset({"parent", "children", "kernels", "module_call"})
KERNEL_LINKS = frozenset({"launcher"})


def _repr(event: Op | Kernel, links: frozenset[str]) -> str:
    fields = ", ".join(f"{name}={getattr(event, name)!r}" for name in event.__struct_fields__ if name not in links)
    return f"{type(event).__name__}({fields})"


@dataclass(frozen=True)
class Step:
    """One profiled iteration: a ``ProfilerStep#N`` annotation, or one found from the repeating conv calls of a trace
    that marks none (``inferred``)."""

    number: int
    ts_us: float
    dur_us: float
    inferred: bool = False

    @property
    def end_us(self) -> float:
        return self.ts_us + self.dur_us


@dataclass
class Profile:
    """All a trace tells, as typed records. Rules and the conv-layer stage read this, never raw JSON."""

    trace_path: str
    ops: list[Op]  # host events, sorted by start time
    kernels: list[Kernel]  # device events, sorted by start time
    steps: list[Step]  # sorted by start time
    device_properties: list[dict[str, Any]]
    metadata: dict[str, Any]  # the trace's top-level keys other than its events
    unknown_categories: dict[str, int]  # categories this parser does not know, with their counts
    memory_events: list[MemoryEvent] = field(default_factory=list)  # sorted by time; empty without profile_memory

    @property
    def recorded(self) -> dict[str, Any]:
        """What convdoctor's capture recorded in the trace's metadata (``METADATA_KEY``); empty for other traces."""
        recorded = self.metadata.get(METADATA_KEY)
        return recorded if isinstance(recorded, dict) else {}

    @property
    def environment(self) -> RecordedEnvironment:
        """Settings convdoctor recorded at capture time (cudnn.benchmark, TF32, threads…); all None for other
        traces, and for any value of another type than the field's (a hand-edited trace cannot put NaN, containers
        or numbers beyond int64 before the rules and the reports)."""
        return RecordedEnvironment.from_metadata(self.recorded)

    @property
    def has_device_events(self) -> bool:
        return bool(self.kernels)

    @cached_property
    def outermost_cpu_ops(self) -> list[Op]:
        """The CPU operators with no CPU operator around them (the calls the program made), in trace order."""
        nested: set[Op] = set()  # the events inside a CPU operator (events hash by identity)
        outermost = []
        cpu_op = EventKind.CPU_OP
        for op in self.ops:  # sorted by start, longest first: a parent comes before its children
            parent = op.parent
            if parent is not None and (parent.kind is cpu_op or parent in nested):
                nested.add(op)
            elif op.kind is cpu_op:
                outermost.append(op)
        return outermost

    @cached_property
    def scope_ops(self) -> list[Op]:
        """The module-scope annotations (events with a scope), in trace order.

        Found once for the rules that look for module calls, instead of each reading every event (0.02-0.03 s a
        pass at 355k events).
        """
        return [op for op in self.ops if op.scope is not None]

    @cached_property
    def ops_by_kind(self) -> dict[EventKind, list[Op]]:
        """The events of each kind (every kind a key), each list in trace order: a pass that wants one kind reads
        only those."""
        groups: dict[EventKind, list[Op]] = {kind: [] for kind in EventKind}
        for op in self.ops:
            groups[op.kind].append(op)
        return groups

    @cached_property
    def runtime_calls(self) -> dict[int, Op]:
        """The CUDA runtime call of each correlation id (``cudaLaunchKernel``, ``cudaMemcpyAsync``...): found once for
        linking the kernels and for the whole-step views."""
        return {op.correlation: op for op in self.ops_by_kind[EventKind.RUNTIME] if op.correlation is not None}

    @property
    def has_module_scopes(self) -> bool:
        return bool(self.scope_ops)

    @property
    def step_count(self) -> int:
        return max(1, len(self.steps))

    @property
    def step_spans(self) -> list[tuple[int | None, float, float]]:
        """(step number, start, end) of each step; without steps, the whole traced span as one step, number None:
        from the first host or device event's start to the last one's end. Every per-step figure divides by these
        (the summary's step time, the GPU timeline's span), so that they agree."""
        if self.steps:
            return [(s.number, s.ts_us, s.end_us) for s in self.steps]
        span = self.traced_span
        return [] if span is None else [(None, *span)]

    @cached_property
    def traced_span(self) -> tuple[float, float] | None:
        """From the first host or device event's start to the last one's end; None for a trace without events."""
        top = [op for op in self.ops if op.parent is None]
        starts = [op.ts_us for op in top] + [k.ts_us for k in self.kernels]
        ends = [op.end_us for op in top] + [k.end_us for k in self.kernels]
        return (min(starts), max(ends)) if starts else None

    @property
    def step_time_us(self) -> float:
        """Mean wall time of a profiled step (the whole traced span when the trace marks no steps)."""
        spans = self.step_spans
        return sum(end - start for _, start, end in spans) / len(spans) if spans else 0.0

    @property
    def steps_inferred(self) -> bool:
        return bool(self.steps) and self.steps[0].inferred

    @cached_property
    def kernel_launches(self) -> int:
        """CUDA/HIP runtime calls that launch a kernel (``cudaLaunchKernel``...): a trace of a GPU run has them even
        when it has no kernel records (CUPTI range profiling, or device activities not recorded)."""
        return sum(1 for op in self.ops_by_kind[EventKind.RUNTIME] if _launches(op.name))

    @cached_property
    def cpu_op_count(self) -> int:
        """PyTorch operator events: none in a Chrome trace from another tool."""
        return len(self.ops_by_kind[EventKind.CPU_OP])

    def step_of(self, ts_us: float) -> Step | None:
        """The step whose span holds the time ``ts_us`` (the first such, in ``steps`` order; of two steps that touch,
        the one that starts at ``ts_us``).

        Found by bisection, not by a scan: a trace of N steps asks this for about N times more events.
        """
        starts, reach = self._step_index
        started = bisect.bisect_right(starts, ts_us)  # steps[:started] start at or before ts_us
        if started and starts[started - 1] == ts_us:  # a step that starts at ts_us holds it, not one ending there
            return self.steps[bisect.bisect_left(starts, ts_us)]
        first = bisect.bisect_left(reach, ts_us, 0, started)  # the first of them whose span reaches ts_us
        return self.steps[first] if first < started else None

    @cached_property
    def _step_index(self) -> tuple[list[float], list[float]]:
        """The steps' starts and the running maximum of their ends, for ``step_of`` (steps sorted by start)."""
        return [s.ts_us for s in self.steps], list(itertools.accumulate((s.end_us for s in self.steps), max))


@functools.cache
def _launches(name: str) -> bool:
    return "LaunchKernel" in name or name.startswith(("cuLaunch", "cudaLaunch", "hipLaunch", "hipModuleLaunch"))
