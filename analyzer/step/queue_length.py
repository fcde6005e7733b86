"""CUDA queue length over time per stream: HTA's ``queue_length_analysis``.

The queue length of a stream is its outstanding work: +1 when a runtime call enqueues a device event on it, -1
when that event starts. Only pairs whose call and device event are both in the trace count (HTA's semi-join).
"""

from __future__ import annotations

from dataclasses import dataclass

from convdoctor.analyzer.step.device_work import StreamKey, runtime_calls
from convdoctor.analyzer.trace.profile import Profile

SERIES_POINTS = 120  # the series each stream keeps for the report: the maximum of each of this many time bins


@dataclass(frozen=True)
class StreamQueue:
    """One stream's queue length: its extremes, its time-weighted mean, and a series for the chart."""

    device: int | None
    stream: int | None
    enqueued: int  # device events counted
    max_length: int
    mean_length: float  # weighted by time, from the first enqueue to the last start
    empty_share: float  # of that time with nothing queued
    span_us: float
    series: list[tuple[float, int]]  # (µs from the first enqueue, the largest length in that bin)


def queue_lengths(profile: Profile) -> list[StreamQueue]:
    """Each stream's queue length (see the module docstring); empty when no device event has its call."""
    calls = runtime_calls(profile)
    changes: dict[StreamKey, list[tuple[float, int]]] = {}
    for kernel in profile.kernels:
        call = calls.get(kernel.correlation) if kernel.correlation is not None else None
        if call is None:
            continue
        stream = changes.setdefault((kernel.device, kernel.stream), [])
        stream += [(call.ts_us, 1), (kernel.ts_us, -1)]
    return [_queue(key, events) for key, events in sorted(changes.items(), key=lambda item: str(item[0]))]


def _queue(key: StreamKey, changes: list[tuple[float, int]]) -> StreamQueue:
    changes.sort()  # at one time, a start (-1) before an enqueue (+1)
    start, end = changes[0][0], changes[-1][0]
    span = end - start
    length = peak = 0
    weighted = empty = 0.0
    width = span / SERIES_POINTS if span > 0 else 1.0
    bins = [0] * SERIES_POINTS
    previous, current = start, 0
    for ts, change in changes:
        weighted += length * (ts - previous)
        empty += (ts - previous) if length == 0 else 0.0
        index = min(SERIES_POINTS - 1, int((ts - start) / width))
        while current < index:  # the bins without a change hold the length carried into them
            current += 1
            bins[current] = length
        length += change
        peak = max(peak, length)
        bins[index] = max(bins[index], length)
        previous = ts
    series = [(i * width, n) for i, n in enumerate(bins)] if span > 0 else [(0.0, peak)]
    return StreamQueue(device=key[0], stream=key[1], enqueued=len(changes) // 2, max_length=peak,
                       mean_length=weighted / span if span > 0 else 0.0,
                       empty_share=empty / span if span > 0 else 1.0, span_us=span, series=series)
