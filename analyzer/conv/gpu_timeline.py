"""How busy the GPU is within each profiled step: the union of its kernel, memcpy and memset intervals.

A pure function of the Profile's device events and steps. The GPU counts as busy while any stream of the
device runs something, so overlapping streams are not counted twice; idle time is the step's span minus that.
Device events are clipped to the step's span (the ``ProfilerStep#N`` annotation on the host): work the GPU
still runs after the host has moved on counts in the step whose span it falls in. A kernel is counted in the
step in which it starts. A trace that marks no steps is treated as one step over the whole traced span.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Mapping

from convdoctor.analyzer.trace.profile import EventKind, Kernel

if TYPE_CHECKING:
    from convdoctor.analyzer.trace.profile import Profile


@dataclass(frozen=True)
class StepTimeline:
    """The GPU's activity within one step."""

    step: int | None  # the ProfilerStep number; None for the whole trace when it marks no steps
    ts_us: float
    span_us: float
    busy_us: float  # union of device intervals on the device, all streams
    kernel_count: int  # kernels (not memcpy/memset) that start in the step
    gaps: tuple[tuple[float, float], ...]  # idle intervals (start_us, end_us) in the step, in time order

    @property
    def idle_us(self) -> float:
        return self.span_us - self.busy_us


@dataclass(frozen=True)
class GpuTimeline:
    """The GPU's busy and idle time per step (averaged over the profiled steps) on one device."""

    device: int | None  # the device summarized: the one with the most device time in the steps
    steps: tuple[StepTimeline, ...]
    span_us: float  # mean step span
    busy_us: float  # mean busy time per step
    idle_us: float  # mean idle time per step (span - busy)
    idle_share: float  # idle / span, 0..1
    kernel_count: int  # kernels (kind KERNEL) starting inside the steps, over all steps
    median_kernel_us: float  # median duration of those kernels
    stream_busy_us: Mapping[int | None, float]  # mean busy time per step of each stream of the device
    kernel_us: float = 0.0  # mean per step: durations of the kernels (not memcpy/memset) starting in it, all devices

    @property
    def kernels_per_step(self) -> float:
        return self.kernel_count / len(self.steps) if self.steps else 0.0


def gpu_timeline(profile: Profile, device: int | None = None) -> GpuTimeline | None:
    """The GPU timeline of ``device`` (default: the busiest device), or None when the trace has no device events."""
    events = profile.kernels
    if device is not None:
        events = [k for k in events if k.device == device]
    if not events:
        return None
    spans = _step_spans(profile)
    kernel_us = _kernel_time(profile.kernels, spans)
    if device is None:
        devices = {k.device for k in events}
        if len(devices) == 1:  # one device (most traces): nothing to weigh, no event to leave out
            device = devices.pop()
        else:
            device = _busiest_device(events, spans)
            events = [k for k in events if k.device == device]
    window = _Window(events)
    steps = []
    stream_busy: dict[int | None, float] = defaultdict(float)
    durations: list[float] = []
    compute = EventKind.KERNEL
    for number, start, end in spans:
        inside = window.overlapping(start, end)
        merged = _merged(inside, start, end)
        started = [k for k in inside if start <= k.ts_us < end and k.kind is compute]
        durations.extend(k.dur_us for k in started)
        busy = _length(merged)
        if len({k.stream for k in inside}) == 1:  # one stream (most traces): its busy time is the device's
            stream_busy[inside[0].stream] += busy
        else:
            by_stream: dict[int | None, list[Kernel]] = defaultdict(list)
            for k in inside:
                by_stream[k.stream].append(k)
            for stream, stream_events in by_stream.items():
                stream_busy[stream] += _length(_merged(stream_events, start, end))
        steps.append(StepTimeline(step=number, ts_us=start, span_us=end - start, busy_us=busy,
                                  kernel_count=len(started), gaps=_gaps(merged, start, end)))
    count = len(steps)
    span = sum(s.span_us for s in steps) / count
    busy = sum(s.busy_us for s in steps) / count
    return GpuTimeline(
        device=device,
        steps=tuple(steps),
        span_us=span,
        busy_us=busy,
        idle_us=span - busy,
        idle_share=(span - busy) / span if span > 0 else 0.0,
        kernel_count=len(durations),
        median_kernel_us=statistics.median(durations) if durations else 0.0,
        stream_busy_us={stream: total / count for stream, total in sorted(stream_busy.items(), key=_stream_key)},
        kernel_us=kernel_us / count,
    )


def _kernel_time(events: list[Kernel], spans: list[tuple[int | None, float, float]]) -> float:
    """The summed durations of the kernels (kind KERNEL, every device) that start inside one of the spans."""
    compute = EventKind.KERNEL
    starts = [k.ts_us for k in events]  # a Profile's kernels are sorted by start
    total = 0.0
    for _, start, end in sorted(spans, key=lambda span: span[1]):
        first, last = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        total += sum(k.dur_us for k in events[first:last] if k.kind is compute)
    return total


def _step_spans(profile: Profile) -> list[tuple[int | None, float, float]]:
    """(step number, start, end) of each step; the whole traced span (host and device) when there are none: the
    profile's own spans, which the summary's step time is the mean of."""
    return profile.step_spans


class _Window:
    """Device events by start time, to find those overlapping a step without scanning all of them for each step.

    A trace of N steps has about N times the events of one step: a scan per step would take time quadratic in the
    length of the trace.
    """

    def __init__(self, events: list[Kernel]) -> None:
        self.events = events
        self.starts = [k.ts_us for k in events]
        if self.starts != sorted(self.starts):  # a Profile's kernels are sorted already: checked, not sorted again
            self.events = sorted(events, key=attrgetter("ts_us"))
            self.starts = [k.ts_us for k in self.events]
        self.longest_us = max([k.dur_us for k in self.events], default=0.0)

    def overlapping(self, start: float, end: float) -> list[Kernel]:
        """The events that run for some time in ``(start, end)``, by start time."""
        first = bisect.bisect_left(self.starts, start - self.longest_us)  # none before this one ends after start
        last = bisect.bisect_left(self.starts, end)
        return [k for k in self.events[first:last] if k.ts_us + k.dur_us > start]  # end_us inlined: 2x faster


def _busiest_device(events: list[Kernel], spans: list[tuple[int | None, float, float]]) -> int | None:
    time: dict[int | None, float] = {k.device: 0.0 for k in events}
    window = _Window(events)
    for _, start, end in spans:
        for k in window.overlapping(start, end):
            time[k.device] += max(0.0, min(k.end_us, end) - max(k.ts_us, start))
    return max(time, key=lambda d: (time[d], -(d if d is not None else -1)))


def _merged(events: list[Kernel], start: float, end: float) -> list[tuple[float, float]]:
    """The time in ``(start, end)`` that ``events`` (sorted by start, each running for some time in it) cover, as
    non-overlapping intervals in order.

    The events are merged as they come (no interval tuple per event, no sort), and only the first and last
    intervals are clipped to the span: the others lie inside it. Clipping each event first, then merging, gives
    the same intervals (the same floats): an event that overlaps or touches another still does once both are
    clipped to a span both run in.
    """
    merged: list[tuple[float, float]] = []
    run_start = run_end = -math.inf
    for k in events:
        event_start = k.ts_us
        event_end = event_start + k.dur_us
        if event_end <= event_start:
            continue
        if event_start <= run_end:
            if event_end > run_end:
                run_end = event_end
        else:
            if run_end > -math.inf:
                merged.append((run_start, run_end))
            run_start, run_end = event_start, event_end
    if run_end > -math.inf:
        merged.append((run_start, run_end))
    if merged:
        merged[0] = (max(merged[0][0], start), merged[0][1])
        merged[-1] = (merged[-1][0], min(merged[-1][1], end))
    return merged


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _gaps(merged: list[tuple[float, float]], start: float, end: float) -> tuple[tuple[float, float], ...]:
    gaps = []
    cursor = start
    for busy_start, busy_end in merged:
        if busy_start > cursor:
            gaps.append((cursor, busy_start))
        cursor = max(cursor, busy_end)
    if cursor < end:
        gaps.append((cursor, end))
    return tuple(gaps)


def _stream_key(item: tuple[int | None, float]) -> tuple[bool, int]:
    return item[0] is None, item[0] or 0
