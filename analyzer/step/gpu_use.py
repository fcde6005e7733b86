"""How well the steps use the GPU, as torch-tb-profiler's Overview put it (tb_plugin gpu_metrics_parser.py), on the
device with the most kernel time: utilization (the union of its kernels over the steps' span), estimated SM
efficiency (blocks per SM of the kernels running at each instant, summed and capped at 1, averaged over the span),
estimated occupancy (the kernels' occupancy weighted by their time) and the share of kernel time in kernels whose
names mark tensor cores. Kernel time outside the steps is left out."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

from convdoctor.analyzer.conv.intervals import length, merged
from convdoctor.analyzer.conv.kernels import uses_tensor_cores
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
    spans.sort()
    starts = [s for s, _ in spans]
    pieces = [(k, s, e) for k in kernels if k.device == device for s, e in _inside(k, spans, starts)]
    busy = length(merged((s, e) for _, s, e in pieces))
    kernel_us = sum(e - s for _, s, e in pieces)
    tensor = sum(e - s for k, s, e in pieces if uses_tensor_cores(k.name) is True)
    occupancy, source = _occupancy(pieces, _device_properties(profile, device))
    return GpuUse(device=device, utilization=busy / total, sm_efficiency=_sm_efficiency(pieces, total),
                  occupancy_pct=occupancy, occupancy_from=source,
                  tensor_core_share=tensor / kernel_us if kernel_us else None)


def _inside(kernel: Kernel, spans: list[tuple[float, float]], starts: list[float]) -> list[tuple[float, float]]:
    """The kernel's parts inside the steps (``spans`` sorted by start; steps do not overlap)."""
    start, end = kernel.ts_us, kernel.end_us
    parts = []
    for i in range(max(bisect.bisect_right(starts, start) - 1, 0), bisect.bisect_left(starts, end)):
        s, e = spans[i]
        if start < e and end > s:
            parts.append((max(start, s), min(end, e)))
    return parts


def _sm_efficiency(pieces: list[tuple[Kernel, float, float]], total: float) -> float | None:
    ends = [(s, 0, k.blocks_per_sm) for k, s, e in pieces if k.blocks_per_sm] + [
        (e, 1, k.blocks_per_sm) for k, s, e in pieces if k.blocks_per_sm]
    if not ends:
        return None
    ends.sort(key=lambda item: (item[0], item[1]))
    weighted, level, previous = 0.0, 0.0, ends[0][0]
    for when, is_end, value in ends:
        weighted += min(level, 1.0) * (when - previous)
        level += -value if is_end else value
        previous = when
    return weighted / total


def _occupancy(pieces: list[tuple[Kernel, float, float]], device: dict | None) -> tuple[float | None, str]:
    weighted = weight = 0.0
    sources = set()
    for k, s, e in pieces:
        value = k.est_occupancy_pct
        if value is not None:
            sources.add("trace")
        elif device is not None and (value := computed_occupancy_pct(k, device)) is not None:
            sources.add("computed")
        if value is not None:
            weighted += value * (e - s)
            weight += e - s
    if not weight:
        return None, "none"
    return weighted / weight, " and ".join(sorted(sources, reverse=True))


def _device_properties(profile: Profile, device: int | None) -> dict | None:
    return next((p for p in profile.device_properties if p.get("id") == device), None)
