"""How well the steps use the GPU, as torch-tb-profiler's Overview put it (tb_plugin gpu_metrics_parser.py), on the
device with the most kernel time: utilization (the union of its kernels over the steps' span), estimated SM
efficiency (blocks per SM of the kernels running at each instant, summed and capped at 1, averaged over the span),
estimated occupancy (the kernels' occupancy weighted by their time) and the share of kernel time in kernels whose
names mark tensor cores. Kernel time outside the steps is left out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from convdoctor.analyzer.conv.kernels import uses_tensor_cores
from convdoctor.analyzer.step.columns import spans as event_spans
from convdoctor.analyzer.step.coverage import union
from convdoctor.analyzer.step.occupancy import computed_occupancy_pct
from convdoctor.analyzer.trace.profile import EventKind, Kernel, Profile


@dataclass(frozen=True)
class GpuUse:
    device: int | None
    utilization: float  # 0..1
    sm_efficiency: float | None  # 0..1; None when no kernel has blocks per SM
    occupancy_pct: float | None  # 0..100; None when no kernel has an occupancy
    occupancy_from: str  # "trace" (Kineto's estimate), "computed" (launch records), "trace and computed", "none"
    tensor_core_share: float | None  # of kernel time; None without kernel time


def gpu_use(profile: Profile) -> GpuUse | None:
    """None when the trace has no kernel records."""
    spans = [(start, end) for _, start, end in profile.step_spans]
    total = sum(end - start for start, end in spans)
    kernels = [k for k in profile.kernels if k.kind is EventKind.KERNEL]
    if not kernels or total <= 0:
        return None
    time: dict[int | None, float] = defaultdict(float)
    for k in kernels:
        time[k.device] += k.dur_us
    device = max(time, key=lambda d: time[d])
    kernels = [k for k in kernels if k.device == device]
    pieces = _Pieces(kernels, sorted(spans))
    lengths = pieces.ends - pieces.starts
    busy_starts, busy_ends = union(pieces.starts, pieces.ends)
    busy = sum((busy_ends - busy_starts).tolist())  # each sum adds in order, as a loop over the pieces would
    kernel_us = sum(lengths.tolist())
    tensor = sum(lengths[np.array([uses_tensor_cores(k.name) is True for k in kernels], dtype=bool)[pieces.kernel]
                         ].tolist())
    occupancy, source = _occupancy(kernels, pieces, lengths, _device_properties(profile, device))
    return GpuUse(device=device, utilization=busy / total, sm_efficiency=_sm_efficiency(kernels, pieces, total),
                  occupancy_pct=occupancy, occupancy_from=source,
                  tensor_core_share=tensor / kernel_us if kernel_us else None)


class _Pieces:
    """The kernels' parts inside the steps (``spans``: sorted, not overlapping), kernel by kernel, then step by step:
    each part's start, end and kernel (its index in ``kernels``)."""

    def __init__(self, kernels: list[Kernel], spans: list[tuple[float, float]]) -> None:
        starts, ends = event_spans(kernels)
        span_starts, span_ends = np.array(spans, dtype=float).reshape(-1, 2).T
        first = np.maximum(np.searchsorted(span_starts, starts, "right") - 1, 0)  # the steps each kernel may touch
        count = np.maximum(np.searchsorted(span_starts, ends, "left") - first, 0)
        kernel = np.repeat(np.arange(len(kernels)), count)
        step = first[kernel] + np.arange(len(kernel)) - np.repeat(np.cumsum(count) - count, count)
        inside = (starts[kernel] < span_ends[step]) & (ends[kernel] > span_starts[step])
        kernel, step = kernel[inside], step[inside]
        self.kernel = kernel
        self.starts = np.maximum(starts[kernel], span_starts[step])
        self.ends = np.minimum(ends[kernel], span_ends[step])


def _sm_efficiency(kernels: list[Kernel], pieces: _Pieces, total: float) -> float | None:
    """The time-weighted blocks per SM of the kernels running, capped at 1 at each instant, over ``total``."""
    blocks = np.array([k.blocks_per_sm or 0.0 for k in kernels], dtype=float)[pieces.kernel]
    has = blocks != 0
    if not has.any():
        return None
    count = int(has.sum())
    when = np.concatenate((pieces.starts[has], pieces.ends[has]))
    change = np.concatenate((blocks[has], -blocks[has]))
    order = np.lexsort((np.arange(2 * count), np.repeat([0, 1], count), when))  # by time, a start before an end
    when, level = when[order], np.cumsum(change[order])  # the blocks per SM running from each instant on
    before = np.concatenate(([0.0], level[:-1]))
    return sum((np.minimum(before, 1.0) * np.diff(when, prepend=when[0])).tolist()) / total


def _occupancy(kernels: list[Kernel], pieces: _Pieces, lengths: np.ndarray, device: dict | None
               ) -> tuple[float | None, str]:
    """The kernels' occupancy weighted by their time in the steps, and where it comes from."""
    values, sources = [], []
    for k in kernels:
        value, source = k.est_occupancy_pct, "trace"
        if value is None and device is not None:
            value, source = computed_occupancy_pct(k, device), "computed"
        values.append(np.nan if value is None else value)
        sources.append(source)
    value = np.array(values, dtype=float)[pieces.kernel]
    has = ~np.isnan(value)
    weight = sum(lengths[has].tolist())
    if not weight:
        return None, "none"
    found = {sources[i] for i in pieces.kernel[has].tolist()}
    return sum((value[has] * lengths[has]).tolist()) / weight, " and ".join(sorted(found, reverse=True))


def _device_properties(profile: Profile, device: int | None) -> dict | None:
    return next((p for p in profile.device_properties if p.get("id") == device), None)
