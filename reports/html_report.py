"""report.html: one self-contained page (inline CSS, SVG and a few lines of JS), autoescaped throughout."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from convdoctor.reports.json_report import report_to_dict
from convdoctor.reports.presentation import (
    architecture_note,
    headline,
    measured_result,
    plan_lines,
    tensorboard_command,
)
from convdoctor.reports.report import Report

_ENVIRONMENT = Environment(
    loader=PackageLoader("convdoctor.reports", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(report: Report) -> str:
    """The report as an HTML page. Every name in it is user data and is escaped by the template engine."""
    data = report_to_dict(report)
    summary = data["summary"]
    step_ms = summary["step_time_ms"] or 1.0
    other_ms = max(step_ms - summary["conv_time_ms"], 0.0)
    breakdown = [
        ("convolutions", summary["conv_time_ms"] - summary["conversion_time_ms"], "#3b6fb6"),
        ("layout conversions", summary["conversion_time_ms"], "#d9822b"),
        ("everything else", other_ms, "#9aa5b1"),
    ]
    return _ENVIRONMENT.get_template("report.html.j2").render(
        report=data,
        headline=headline(report),
        results=[measured_result(o) for o in report.outcomes],
        architecture=[architecture_note(o) for o in report.outcomes],
        breakdown=[(label, ms, ms / step_ms, color) for label, ms, color in breakdown],
        max_layer_ms=max((layer["time_ms"] for layer in data["layers"]), default=1.0) or 1.0,
        tensorboard=tensorboard_command(report.logdir),
        rule_docs=report.rule_docs,
        plan=plan_lines(report.plan) if report.plan else [],
    )
