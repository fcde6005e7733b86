"""Geometry of the report's SVG charts: plain numbers and labels for the template, which writes (and escapes) the
markup. Log scales, decade ticks, the roofline's two roofs, and the measured speedups with their intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from convdoctor.analyzer.conv.roofline import Roofline
from convdoctor.analyzer.measure.results import FindingOutcome, Plan
from convdoctor.analyzer.step.memory import DeviceMemory, MemoryView
from convdoctor.reports.report import ReportLayer

BOUND_COLORS = {"memory": "#d9822b", "compute": "#3b6fb6", None: "#9aa5b1"}
VERDICT_COLORS = {"faster": "#1e7e34", "slower": "#c0392b", "no measurable difference": "#616e7c"}


@dataclass(frozen=True)
class LogAxis:
    """A log10 scale from ``low`` to ``high`` onto pixels ``start`` to ``end`` (end < start for a y axis)."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = math.log10(self.high) - math.log10(self.low)
        fraction = (math.log10(max(value, 1e-300)) - math.log10(self.low)) / span
        return round(self.start + fraction * (self.end - self.start), 1)

    def decades(self) -> list[float]:
        first, last = math.ceil(math.log10(self.low) - 1e-9), math.floor(math.log10(self.high) + 1e-9)
        return [10.0**k for k in range(first, last + 1)]


def decade_range(values: list[float], least_decades: int = 2) -> tuple[float, float]:
    """Whole decades around ``values`` (all positive), at least ``least_decades`` wide."""
    low = math.floor(math.log10(min(values)))
    high = math.ceil(math.log10(max(values)))
    while high - low < least_decades:
        low, high = (low - 1, high) if (high - low) % 2 else (low, high + 1)
    return 10.0**low, 10.0**high


def si_number(value: float) -> str:
    """A tick label: 0.01, 0.1, 1, 10, 100, 1k, 10k, 1M."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def quantity(value: float) -> str:
    """A rate for people: 15,700 / 67.2 / 3.05 / 0.125 (no exponents)."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


@dataclass
class RooflineChart:
    """Everything the template needs to draw the roofline: pixel coordinates and texts."""

    width: int
    height: int
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    memory_roof: tuple[float, float, float, float]  # x1, y1, x2, y2
    compute_roof: tuple[float, float, float, float]
    ridge_x: float
    memory_label: tuple[float, float, str, str]  # x, y, text, text-anchor
    compute_label: tuple[float, float, str]
    ridge_label: tuple[float, float, str, str]  # x, y, text, text-anchor
    dots: list[dict[str, Any]] = field(default_factory=list)


def roofline_chart(roofline: Roofline | None, layers: list[ReportLayer], width: int = 760, height: int = 440
                   ) -> RooflineChart | None:
    """The roofs of ``roofline`` with a dot for each layer that achieved some FLOP/s; None without known peaks or
    such a layer."""
    points = [row for row in layers if row.roofline and row.roofline.achieved_flops and row.layer.intensity]
    if roofline is None or not roofline.peaks.known or not points:
        return None
    peaks = roofline.peaks
    peak, bandwidth, ridge = peaks.peak_flops_per_s / 1e9, peaks.bandwidth_bytes_per_s / 1e9, peaks.ridge_point
    left, top, right, bottom = 64.0, 16.0, width - 16.0, height - 52.0
    x_low, x_high = decade_range([p.layer.intensity for p in points] + [ridge / 2, ridge * 4])  # both roofs show
    y_low, y_high = decade_range([p.roofline.achieved_flops / 1e9 for p in points] + [peak * 1.5])
    x = LogAxis(x_low, x_high, left, right)
    y = LogAxis(y_low, y_high, bottom, top)
    start = max(x_low, y_low / bandwidth)  # where the memory roof enters the plot: its left or its bottom edge
    memory = (x(start), y(bandwidth * start), x(ridge), y(peak))
    compute = (x(ridge), y(peak), x(x_high), y(peak))
    middle = math.sqrt(start * ridge)  # the memory roof's middle, on the log scale
    dots = [_dot(row, x(row.layer.intensity), y(min(max(row.roofline.achieved_flops / 1e9, y_low), y_high)))
            for row in sorted(points, key=lambda row: row.layer.time_per_step_us)]  # slowest drawn last, on top
    ridge_x = x(ridge)
    return RooflineChart(
        width=width, height=height, plot=(left, top, right, bottom),
        x_ticks=[(x(v), si_number(v)) for v in x.decades()],
        y_ticks=[(y(v), si_number(v)) for v in y.decades()],
        memory_roof=memory, compute_roof=compute, ridge_x=ridge_x,
        memory_label=_memory_label(x(middle), y(bandwidth * middle), left, top,
                                   f"memory roof {quantity(bandwidth)} GB/s"),
        compute_label=(ridge_x + 6, y(peak) - 6, f"compute roof {quantity(peak)} GFLOP/s"),
        ridge_label=(ridge_x + 4, bottom - 6, f"ridge {quantity(ridge)} FLOP/byte", "start") if ridge_x < right - 140
        else (ridge_x - 4, bottom - 6, f"ridge {quantity(ridge)} FLOP/byte", "end"),
        dots=dots,
    )


def _dot(row: ReportLayer, cx: float, cy: float) -> dict[str, Any]:
    """A layer's dot at (cx, cy), colored by its bound, with its numbers as the tooltip."""
    point, intensity = row.roofline, row.layer.intensity
    bound = point.bound.value
    return {
        "name": row.layer.name, "cx": cx, "cy": cy, "r": 4.5, "bound": bound, "color": BOUND_COLORS[bound],
        "text": (f"{quantity(intensity)} FLOP/byte, {quantity(point.achieved_flops / 1e9)} GFLOP/s achieved of "
                 f"{quantity(point.attainable_flops / 1e9)} attainable ({point.pct_of_roofline:.0f}% of the roofline), "
                 f"{bound}-bound, {row.layer.time_per_step_us / 1e3:.3f} ms/step"),
    }


def _memory_label(x: float, y: float, left: float, top: float, text: str) -> tuple[float, float, str, str]:
    """Above-left of the rising memory roof, ending near its middle; in the plot's top-left corner when the roof is
    too short for that (about 6.2 px a character at 11 px)."""
    if x - 8 - 6.2 * len(text) >= left + 4 and y - 8 >= top + 12:
        return (round(x - 8, 1), round(y - 8, 1), text, "end")
    return (left + 6, top + 14, text, "start")


SPEEDUP_TICKS = (0.1, 0.2, 0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 50.0,
                 100.0)


@dataclass
class SpeedupChart:
    """Measured speedups as points with their 95% interval on a log axis, and a line at 1.0×."""

    width: int
    height: int
    plot: tuple[float, float, float, float]
    ticks: list[tuple[float, str]]
    unity_x: float
    rows: list[dict[str, Any]]


def speedup_chart(outcomes: list[FindingOutcome], results: list[str], plan: Plan | None,
                  plan_result: str | None = None, width: int = 760, row_height: int = 24) -> SpeedupChart | None:
    """One row per finding with a reliable measurement (and one for the plan, measured together), or None when
    none is: a measurement taken under contention has no verdict, and no bar.

    ``results`` are the findings' measured results in words (presentation.measured_result), for the tooltips.
    """
    rows = []
    for outcome, result in zip(outcomes, results):
        if outcome.measurement is not None and outcome.measurement.reliable:
            label = f"{outcome.finding.rule_id} {outcome.finding.rule_name}"
            rows.append({"label": label, "kind": "finding", "estimate": outcome.measurement.estimate,
                         "text": f"{label}: {result}"})
    if not rows:
        return None
    if plan is not None:
        rows.append({"label": "plan (fixes together)", "kind": "plan", "estimate": plan.measurement.estimate,
                     "text": f"the plan's fixes {plan_result or 'together'}"})
    lows = [r["estimate"].ci_low for r in rows] + [1 / 1.1]
    highs = [r["estimate"].ci_high for r in rows] + [1.1]
    low, high = min(lows) / 1.08, max(highs) * 1.08
    left, right = 210.0, width - 70.0
    top, bottom = 4.0, 4.0 + row_height * len(rows)
    x = LogAxis(low, high, left, right)
    ticks, last = [], -math.inf
    for value in SPEEDUP_TICKS:
        if low <= value <= high and x(value) - last >= 44:
            ticks.append((x(value), f"{value:g}×"))
            last = x(value)
    for index, row in enumerate(rows):
        e = row["estimate"]
        row.update(y=round(top + row_height * (index + 0.5), 1), x_low=x(e.ci_low), x_high=x(e.ci_high),
                   x=x(e.speedup), color=VERDICT_COLORS.get(e.verdict.value, VERDICT_COLORS["slower"]),
                   value=f"{e.speedup:.2f}×")
    return SpeedupChart(width=width, height=int(bottom + 38), plot=(left, top, right, bottom), ticks=ticks,
                        unity_x=x(1.0), rows=rows)


@dataclass(frozen=True)
class MemoryChart:
    """One device's allocation curve: its points in pixels, the peak's, and the axes' ticks."""

    device: DeviceMemory
    width: int
    height: int
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    points: list[tuple[float, float]]
    peak: tuple[float, float]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]


def memory_charts(memory: MemoryView | None, width: int = 760, height: int = 240) -> list[MemoryChart]:
    """A step-shaped line of each device's bytes allocated over its step (linear axes from 0), with its peak."""
    charts = []
    for device in memory.devices if memory is not None else ():
        left, top, right, bottom = 72.0, 12.0, width - 16.0, height - 40.0
        span_ms = max(device.step_us / 1e3, max((t for t, _ in device.curve), default=0.0) / 1e3, 1e-6)
        low = min(0, min(b for _, b in device.curve))  # a relative curve may go below its start
        high = max(device.peak_bytes, 1) * 1.1
        x = _linear(0.0, span_ms, left, right)
        y = _linear(low, high, bottom, top)
        points: list[tuple[float, float]] = []
        for t_us, allocated in device.curve:  # a step line: the total holds until the next event
            if points:
                points.append((x(t_us / 1e3), points[-1][1]))
            points.append((x(t_us / 1e3), y(allocated)))
        points.append((right, points[-1][1]))
        charts.append(MemoryChart(
            device=device, width=width, height=height, plot=(left, top, right, bottom), points=points,
            peak=(x(device.peak_at_us / 1e3), y(device.peak_bytes)),
            x_ticks=[(x(v), f"{v:g}") for v in _nice_ticks(0.0, span_ms)],
            y_ticks=[(y(v), byte_label(v)) for v in _nice_ticks(low, high)]))
    return charts


def _linear(low: float, high: float, start: float, end: float):
    """A linear scale from ``low``..``high`` onto pixels ``start``..``end``."""
    scale = (end - start) / (high - low) if high > low else 0.0
    return lambda value: round(start + (value - low) * scale, 1)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 × 10^k apart) from ``low`` to ``high``."""
    raw = (high - low) / count if high > low else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step)
    return [round(k * step, 12) for k in range(first, math.floor(high / step) + 1)]


def byte_label(value: float) -> str:
    """A tick label in bytes: 0, 500 kB, 1.5 MB, 2 GB."""
    for factor, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= factor:
            return f"{value / factor:g} {suffix}"
    return f"{value:g} B"
