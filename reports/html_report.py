"""report.html: one self-contained page (inline CSS, SVG and a few lines of JS), autoescaped throughout."""

from __future__ import annotations

from typing import Any

from convdoctor.reports.charts import BOUND_COLORS, roofline_chart, speedup_chart
from convdoctor.reports.json_report import report_to_dict
from convdoctor.reports.presentation import (
    architecture_note,
    headline,
    kernel_columns,
    layer_lines,
    left_out_lines,
    plan_lines,
    result_with_prediction,
    tensorboard_command,
)
from convdoctor.reports.report import Report
from convdoctor.reports.templating import ENVIRONMENT

TEMPLATE = "report.html.j2"


def load_template() -> None:
    """Compile the page's template now (a tenth of a second, once per process): ``analyze`` does it while the
    first trace is gunzipped in the background."""
    ENVIRONMENT.get_template(TEMPLATE)


def render_html(report: Report, data: dict[str, Any] | None = None) -> str:
    """The report as an HTML page (``data``: its report_to_dict, when the caller has it). Every name in it is user
    data and is escaped by the template engine."""
    data = report_to_dict(report) if data is None else data
    analysis = report.analysis
    step_us = analysis.step_time_us or 1.0
    breakdown = [
        ("convolutions", analysis.conv_time_us - analysis.conversion_time_us, "#3b6fb6"),
        ("layout conversions", analysis.conversion_time_us, "#d9822b"),
        ("everything else", analysis.other_time_us, "#9aa5b1"),
    ]
    results = [result_with_prediction(o) for o in report.outcomes]
    plan = plan_lines(report.plan) if report.plan else []
    left_out = left_out_lines(report.plan) if report.plan else []
    return ENVIRONMENT.get_template(TEMPLATE).render(
        report=data,
        headline=headline(report),
        results=results,
        left_out=left_out,
        architecture=[architecture_note(o) for o in report.outcomes],
        layer_results=[layer_lines(o) for o in report.outcomes],
        breakdown=[(label, us / 1e3, us / step_us, color) for label, us, color in breakdown],
        max_layer_ms=max((layer["time_ms"] for layer in data["layers"]), default=1.0) or 1.0,
        tensorboard=tensorboard_command(report.logdir),
        rule_docs=report.rule_docs,
        plan=plan,
        roofline=roofline_chart(data["summary"]["peaks"], data["layers"]),
        speedups=speedup_chart(data["findings"], results, data["plan"], plan[-1] if plan else None),
        bound_colors=BOUND_COLORS,
        roofline_reason=_no_roofline_reason(report),
        kernel_cells={layer["name"]: kernel_columns(layer["device_kernels"]) for layer in data["layers"]},
    )


def _no_roofline_reason(report: Report) -> str:
    roofline = report.roofline
    if roofline is None:
        return "the report was made without one."
    if not roofline.peaks.known:
        return roofline.peaks.description + "."
    return "no layer has known FLOPs, bytes and forward time."
