"""CUDA queue length over time per stream: HTA's ``queue_length_analysis``.

The queue length of a stream is its outstanding work: +1 when a runtime call enqueues a device event on it, -1
when that event starts. Only pairs whose call and device event are both in the trace count (HTA's semi-join).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convdoctor.analyzer.step.columns import column
from convdoctor.analyzer.step.device_work import StreamKey
from convdoctor.analyzer.trace.profile import Kernel, Op, Profile

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
    calls = profile.runtime_calls
    enqueued: dict[StreamKey, tuple[list[Op], list[Kernel]]] = {}  # per stream: the calls and their device events
    for kernel in profile.kernels:
        call = calls.get(kernel.correlation)  # type: ignore[arg-type]
        if call is not None:
            pair = enqueued.setdefault((kernel.device, kernel.stream), ([], []))
            pair[0].append(call)
            pair[1].append(kernel)
    return [_queue(key, *pair) for key, pair in sorted(enqueued.items(), key=lambda item: str(item[0]))]


def _queue(key: StreamKey, calls: list[Op], events: list[Kernel]) -> StreamQueue:
    ts = np.concatenate((column(calls, "ts_us"), column(events, "ts_us")))
    change = np.repeat([1, -1], len(events))
    order = np.lexsort((change, ts))  # at one time, a start (-1) before an enqueue (+1)
    ts, change = ts[order], change[order]
    start, end = float(ts[0]), float(ts[-1])
    span = end - start
    length = np.cumsum(change)  # after each change
    before, gap = length - change, np.diff(ts, prepend=start)
    width = span / SERIES_POINTS if span > 0 else 1.0
    index = np.minimum(SERIES_POINTS - 1, ((ts - start) / width).astype(np.intp))
    bins = np.zeros(SERIES_POINTS, dtype=np.intp)  # the largest length in each bin; a bin without a change holds
    bins[1:index[-1] + 1] = length[np.searchsorted(index, np.arange(1, index[-1] + 1)) - 1]  # the one carried in
    np.maximum.at(bins, index, length)
    peak = max(0, int(length.max()))
    weighted = sum((before * gap).tolist())  # each sum adds in time order, as a loop over the changes would
    empty = sum(gap[before == 0].tolist())
    series = [(i * width, n) for i, n in enumerate(bins.tolist())] if span > 0 else [(0.0, peak)]
    return StreamQueue(device=key[0], stream=key[1], enqueued=len(events), max_length=peak,
                       mean_length=weighted / span if span > 0 else 0.0,
                       empty_share=empty / span if span > 0 else 1.0, span_us=span, series=series)
