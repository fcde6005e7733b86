"""Wording shared by the HTML and terminal reports: the headline and how a measurement reads."""

from __future__ import annotations

from convdoctor.analyzer.benchmark import Verdict
from convdoctor.reports.report import FindingOutcome, Report


def headline(report: Report) -> str:
    """The verdict in one sentence."""
    analysis = report.analysis
    if not analysis.layers:
        return "No convolutions were found in the profiled steps."
    share = analysis.share(analysis.conv_time_us)
    best = max((o for o in report.outcomes if o.measurement and o.measurement.estimate.verdict is Verdict.FASTER
                and o.numerics_ok), key=lambda o: o.measurement.estimate.speedup, default=None)
    count = len(analysis.layers)
    opening = f"Convolutions are {share:.0%} of step time ({count} layer{'' if count == 1 else 's'})."
    if best is None:
        measured = [o for o in report.outcomes if o.measurement]
        if measured:
            return f"{opening} No candidate made it measurably faster."
        return f"{opening} {len(report.outcomes)} finding(s); none measured."
    return f"{opening} {best.finding.fix} makes it {measured_result(best)}, measured."


def measured_result(outcome: FindingOutcome) -> str:
    """``1.23× faster (1.10–1.35×)`` or ``no measurable difference (0.97–1.04×)``, or why not measured."""
    if outcome.measurement is None:
        return f"not measured: {outcome.not_measured}"
    e = outcome.measurement.estimate
    interval = f"{e.ci_low:.2f}–{e.ci_high:.2f}×"
    if e.verdict is Verdict.NO_DIFFERENCE:
        return f"no measurable difference ({e.speedup:.2f}×, 95% CI {interval})"
    return f"{e.speedup:.2f}× {e.verdict.value} (95% CI {interval})"


def architecture_note(outcome: FindingOutcome) -> str | None:
    """``architecture change, needs retraining: FLOPs 7.40 → 1.85 G (0.25×), params 73.9 k → 18.5 k (0.25×)``."""
    delta = outcome.architecture
    if delta is None:
        return None
    return (f"architecture change, needs retraining: FLOPs {_si(delta.before.flops)} → {_si(delta.after.flops)} "
            f"({delta.flops_ratio:.2f}×), params {_si(delta.before.params)} → {_si(delta.after.params)} "
            f"({delta.params_ratio:.2f}×)")


def _si(value: float) -> str:
    for factor, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:g}"


def tensorboard_command(logdir: str) -> str:
    """The command that opens the traces in TensorBoard's PyTorch Profiler plugin."""
    return f"tensorboard --logdir {logdir}"
