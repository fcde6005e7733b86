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


def tensorboard_command(logdir: str) -> str:
    """The command that opens the traces in TensorBoard's PyTorch Profiler plugin."""
    return f"tensorboard --logdir {logdir}"
