"""`convdoctor diff`: what changed between two reports, per layer and overall, and which findings came and went."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convdoctor.reports.templating import ENVIRONMENT


@dataclass(frozen=True)
class LayerChange:
    """One layer's time per step before and after; None on the side where the layer does not exist."""

    name: str
    before_ms: float | None
    after_ms: float | None

    @property
    def ratio(self) -> float | None:
        """after / before: below 1 means the layer got faster."""
        if self.before_ms and self.after_ms is not None:
            return self.after_ms / self.before_ms
        return None


@dataclass(frozen=True)
class ReportDiff:
    """Two reports compared."""

    before_label: str
    after_label: str
    step_before_ms: float
    step_after_ms: float
    conv_before_ms: float
    conv_after_ms: float
    layers: list[LayerChange]  # largest absolute change first
    findings_gone: list[str]  # "CD101 channels-last: message"
    findings_new: list[str]
    findings_kept: list[str]

    @property
    def step_speedup(self) -> float | None:
        """before / after step time: above 1 means the after run is faster."""
        return self.step_before_ms / self.step_after_ms if self.step_after_ms else None


def diff_reports(before: dict[str, Any], after: dict[str, Any], before_label: str, after_label: str) -> ReportDiff:
    """Compare two report.json documents."""
    times_before = {layer["name"]: layer["time_ms"] for layer in before["layers"]}
    times_after = {layer["name"]: layer["time_ms"] for layer in after["layers"]}
    names = list(dict.fromkeys([*times_before, *times_after]))
    layers = [LayerChange(name, times_before.get(name), times_after.get(name)) for name in names]
    layers.sort(key=lambda c: -abs((c.after_ms or 0.0) - (c.before_ms or 0.0)))
    found_before, found_after = _findings(before), _findings(after)
    return ReportDiff(
        before_label=before_label,
        after_label=after_label,
        step_before_ms=before["summary"]["step_time_ms"],
        step_after_ms=after["summary"]["step_time_ms"],
        conv_before_ms=before["summary"]["conv_time_ms"],
        conv_after_ms=after["summary"]["conv_time_ms"],
        layers=layers,
        findings_gone=[text for key, text in found_before.items() if key not in found_after],
        findings_new=[text for key, text in found_after.items() if key not in found_before],
        findings_kept=[text for key, text in found_after.items() if key in found_before],
    )


def _findings(report: dict[str, Any]) -> dict[str, str]:
    """Findings keyed by rule id (a rule reports once per run), with a one-line description."""
    return {f["rule_id"]: f"{f['rule_id']} {f['rule']}: {f['message']}" for f in report["findings"]}


def render_diff_text(diff: ReportDiff, top: int = 10) -> str:
    """The comparison for a terminal."""
    speedup = diff.step_speedup
    lines = [
        f"before: {diff.before_label}",
        f"after:  {diff.after_label}",
        f"step time {diff.step_before_ms:.3f} -> {diff.step_after_ms:.3f} ms"
        + (f" ({speedup:.2f}x {'faster' if speedup >= 1 else 'slower'})" if speedup else ""),
        f"conv time {diff.conv_before_ms:.3f} -> {diff.conv_after_ms:.3f} ms",
        "",
        "Largest layer changes (ms per step):",
    ]
    for change in diff.layers[:top]:
        lines.append(f"  {change.name[:48]:<48} {_ms(change.before_ms):>9} -> {_ms(change.after_ms):>9}"
                     + (f"  ({change.ratio:.2f}x)" if change.ratio is not None else ""))
    for title, items in (("Findings gone", diff.findings_gone), ("Findings new", diff.findings_new),
                         ("Findings in both", diff.findings_kept)):
        lines += ["", f"{title}:", *(f"  {item}" for item in items or ["none"])]
    return "\n".join(lines)


def render_diff_html(diff: ReportDiff) -> str:
    """The comparison as a self-contained, autoescaped page."""
    return ENVIRONMENT.get_template("diff.html.j2").render(diff=diff)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
