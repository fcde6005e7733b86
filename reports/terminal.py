"""The short terminal summary: slowest conv layers, findings with measured results, where the files are."""

from __future__ import annotations

import click

from convdoctor.reports.presentation import (
    architecture_note,
    headline,
    measured_result,
    plan_lines,
    tensorboard_command,
)
from convdoctor.reports.report import Report

TOP_LAYERS = 5
VERDICT_COLORS = {" faster ": "green", " slower ": "red"}


def render_summary(report: Report, html_path: str, json_path: str, overwrote: bool) -> str:
    """A summary that fits one screen."""
    analysis = report.analysis
    lines = [click.style(headline(report), bold=True), ""]
    if analysis.layers:
        lines.append(f"Slowest conv layers ({analysis.time_basis.value} time per step):")
        width = min(max(len(layer.name) for layer in analysis.layers[:TOP_LAYERS]), 48)
        for layer in analysis.layers[:TOP_LAYERS]:
            gflop = f"{layer.flops / 1e9:7.2f} GFLOP" if layer.flops else "      ? GFLOP"
            lines.append(f"  {layer.name[:48]:<{width}}  {layer.time_per_step_us / 1e3:8.3f} ms  "
                         f"{analysis.share(layer.time_per_step_us):5.1%}  {gflop}  {layer.memory_format.value}")
        lines.append("")
    for outcome in report.outcomes:
        f = outcome.finding
        lines.append(f"{f.rule_id} {f.rule_name}: {f.message}")
        lines.append(f"  fix: {f.fix} -> {_colored(measured_result(outcome))}")
        if outcome.architecture is not None:
            lines.append(f"  {architecture_note(outcome)}")
        elif outcome.measurement is not None and outcome.numerics_ok is False:
            numerics = outcome.measurement.numerics
            grads = f", gradients {numerics.max_grad_rel_error:.3g}" if numerics.max_grad_rel_error is not None else ""
            lines.append(f"  numerics beyond tolerance {f.candidate.tolerance if f.candidate else '?'}: outputs "
                         f"{numerics.max_rel_error:.3g}{grads} (max relative error)")
    if not report.outcomes:
        lines.append("No findings.")
    if report.plan is not None:
        *steps, together = plan_lines(report.plan)
        lines += ["", click.style("Plan (accepted fixes, measured together):", bold=True),
                  *(f"  {number}. {step}" for number, step in enumerate(steps, start=1)), f"  {_colored(together)}"]
    for problem in report.rule_problems:
        lines.append(f"warning: {problem}")
    lines += [
        "",
        f"report: {html_path}" + ("  (overwrote the previous report)" if overwrote else ""),
        f"json:   {json_path}",
        f"traces: {report.logdir}  ->  {tensorboard_command(report.logdir)}",
    ]
    return "\n".join(lines)


def _colored(result: str) -> str:
    """The result with its verdict colored; click.echo drops the color when the output is not a terminal."""
    for word, color in VERDICT_COLORS.items():
        if word in result:
            return click.style(result, fg=color)
    return result
