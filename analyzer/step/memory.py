"""Memory over a step, read from the trace's ``[memory]`` instants (``profile_memory=True``): the bytes allocated on
each device over time, their peak, and the operators that allocate most.

An allocation is charged to the outermost CPU operator around it on its thread (the call the program made:
``aten::conv2d``, not the ``aten::empty`` inside it). Traces of PyTorch 1.9 and before record no ``Total Allocated``:
their curve is the running sum of the allocations since the trace's first event, what was allocated before that
being unknown (``relative``).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

from convdoctor.analyzer.trace.profile import EventKind, MemoryEvent, Op, Profile

MAX_POINTS = 600  # points of a curve kept for the chart: the lowest and highest of each stretch, the peak among them
TOP_OPS = 10
NO_OPERATOR = "(no operator)"
STEP_MARK = "ProfilerStep#"


@dataclass(frozen=True)
class DeviceMemory:
    """One device's allocations over the step that holds its peak."""

    device: str  # "cpu", "cuda:0"...
    step: int | None  # that step's number; None when the trace marks no steps (the whole trace is one step)
    step_us: float  # the step's length
    peak_bytes: int
    peak_at_us: float  # from the step's start
    curve: tuple[tuple[float, int], ...]  # (µs from the step's start, bytes allocated after each of its memory
    # events), at most MAX_POINTS
    events: int  # memory events of the device in that step
    relative: bool  # bytes allocated since the trace's first event on the device, not in all


@dataclass(frozen=True)
class OpAllocation:
    """The bytes one operator allocates on one device per step (frees not subtracted)."""

    name: str
    device: str
    bytes_per_step: float
    allocations_per_step: float


@dataclass(frozen=True)
class MemoryView:
    """Memory over the profiled steps; empty, with a note, for a trace without memory events."""

    devices: tuple[DeviceMemory, ...]
    top_ops: tuple[OpAllocation, ...]  # the TOP_OPS largest, by bytes per step
    other_ops: int  # (operator, device) pairs left out of top_ops
    other_bytes_per_step: float  # what they allocate
    notes: tuple[str, ...]


def memory_view(profile: Profile) -> MemoryView:
    """The allocation curve and peak of each device, and the operators that allocate most."""
    if not profile.memory_events:
        return MemoryView((), (), 0, 0.0, ("the trace has no memory events: it was recorded without "
                                           "profile_memory=True (`convdoctor profile` records them)",))
    spans = profile.step_spans
    by_device: dict[str, list[MemoryEvent]] = defaultdict(list)
    for event in profile.memory_events:
        by_device[device_name(event)].append(event)
    devices = tuple(_device_memory(name, events, spans) for name, events in sorted(by_device.items()))
    notes = []
    if any(d.relative for d in devices):
        notes.append("the trace's memory events record no 'Total Allocated' (PyTorch 1.9 and before): the curve is "
                     "the bytes allocated since the trace's first memory event; what was allocated before is unknown")
    rows, other_ops, other_bytes = _top_ops(profile, spans)
    return MemoryView(devices, rows, other_ops, other_bytes, tuple(notes))


def device_name(event: MemoryEvent) -> str:
    """``cpu``, ``cuda:N``, or the c10 device type's number where it is another."""
    if event.device_type == 0:
        return "cpu"
    kind = "cuda" if event.device_type == 1 else f"device type {event.device_type}"
    return kind if event.device_id is None or event.device_id < 0 else f"{kind}:{event.device_id}"


def allocated_series(events: list[MemoryEvent]) -> tuple[list[int], bool]:
    """The bytes allocated after each event (one device's, in time order): ``Total Allocated``, or where the trace
    has none, the running sum of ``Bytes`` (relative: True)."""
    if all(e.total_allocated is not None for e in events):
        return [e.total_allocated for e in events], False
    running, series = 0, []
    for event in events:
        running += event.bytes
        series.append(running)
    return series, True


def _device_memory(name: str, events: list[MemoryEvent], spans: list[tuple[int | None, float, float]]
                   ) -> DeviceMemory:
    series, relative = allocated_series(events)
    times = [e.ts_us for e in events]
    best = None  # (peak, index of the peak, step number, start, end, first index, end index)
    for number, start, end in spans:
        first, last = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
        if first < last:
            peak_index = max(range(first, last), key=series.__getitem__)
            if best is None or series[peak_index] > best[0]:
                best = (series[peak_index], peak_index, number, start, end, first, last)
    if best is None:  # no memory event inside a step: the whole trace
        best = (max(series), series.index(max(series)), None, times[0], times[-1], 0, len(events))
    peak, peak_index, number, start, end, first, last = best
    points = [(round(times[i] - start, 3), series[i]) for i in range(first, last)]
    return DeviceMemory(device=name, step=number, step_us=end - start, peak_bytes=peak,
                        peak_at_us=round(times[peak_index] - start, 3), curve=tuple(_thinned(points)),
                        events=last - first, relative=relative)


def _thinned(points: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """At most MAX_POINTS points: of each stretch of consecutive points, its lowest and highest (in time order),
    so that every peak and trough stays."""
    if len(points) <= MAX_POINTS:
        return points
    stretch = -(-len(points) // (MAX_POINTS // 2))
    kept = []
    for begin in range(0, len(points), stretch):
        part = points[begin:begin + stretch]
        low, high = min(part, key=lambda p: p[1]), max(part, key=lambda p: p[1])
        kept.extend(sorted({low, high}, key=part.index))
    return kept


def _top_ops(profile: Profile, spans: list[tuple[int | None, float, float]]
             ) -> tuple[tuple[OpAllocation, ...], int, float]:
    """The TOP_OPS (operator, device) pairs that allocate most per step, the number of others and their bytes."""
    outermost = _outermost_by_thread(profile)
    starts = [start for _, start, _ in spans]
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for event in profile.memory_events:
        if event.bytes <= 0:
            continue
        index = bisect.bisect_right(starts, event.ts_us) - 1
        if index < 0 or event.ts_us > spans[index][2]:
            continue  # outside the profiled steps
        total = totals[(_enclosing(outermost.get((event.pid, event.tid)), event.ts_us), device_name(event))]
        total[0] += event.bytes
        total[1] += 1
    steps = max(len(spans), 1)
    rows = sorted(totals.items(), key=lambda item: item[1][0], reverse=True)
    top = tuple(OpAllocation(name, device, size / steps, count / steps)
                for (name, device), (size, count) in rows[:TOP_OPS])
    return top, len(rows[TOP_OPS:]), sum(size for _, (size, _) in rows[TOP_OPS:]) / steps


def _outermost_by_thread(profile: Profile) -> dict[tuple[str, str], tuple[list[float], list[Op]]]:
    """Each thread's outermost CPU operators, in start order, with their starts (they do not overlap). A
    ``ProfilerStep#N`` operator (a CPU operator in PyTorch 1.9 and before) is a step's mark, not an operator: the
    outermost operators inside it take its place."""
    threads: dict[tuple[str, str], tuple[list[float], list[Op]]] = {}
    for outer in profile.outermost_cpu_ops:
        for op in _below_step_mark(outer) if outer.name.startswith(STEP_MARK) else (outer,):
            starts, ops = threads.setdefault((op.pid, op.tid), ([], []))
            starts.append(op.ts_us)
            ops.append(op)
    for starts, ops in threads.values():
        ops.sort(key=lambda op: op.ts_us)
        starts.sort()
    return threads


def _below_step_mark(mark: Op) -> list[Op]:
    """The outermost CPU operators inside a step's mark."""
    found, stack = [], list(mark.children)
    while stack:
        op = stack.pop()
        if op.kind is EventKind.CPU_OP:
            found.append(op)
        else:
            stack.extend(op.children)
    return found


def _enclosing(thread: tuple[list[float], list[Op]] | None, ts_us: float) -> str:
    """The name of the outermost CPU operator around ``ts_us`` on the thread, or NO_OPERATOR."""
    if thread is None:
        return NO_OPERATOR
    starts, ops = thread
    index = bisect.bisect_right(starts, ts_us) - 1
    if index >= 0 and ts_us <= ops[index].end_us and ops[index].kind is EventKind.CPU_OP:
        return ops[index].name
    return NO_OPERATOR
