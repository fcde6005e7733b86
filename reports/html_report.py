"""report.html: one self-contained page (inline CSS, SVG and a few lines of JS), autoescaped throughout."""

from __future__ import annotations

from convdoctor.analyzer.conv.communication import DEFINITIONS as COMM_DEFINITIONS
from convdoctor.analyzer.step.operators import DEFINITIONS as OPERATOR_DEFINITIONS
from convdoctor.analyzer.step.overview import DEFINITIONS as OVERVIEW_DEFINITIONS
from convdoctor.reports.charts import BOUND_COLORS, memory_charts, roofline_chart, speedup_chart
from convdoctor.reports.presentation import (
    architecture_note,
    busy_banner,
    compiled_headline,
    compiled_layer_cells,
    headline,
    kernel_columns,
    layer_lines,
    left_out_lines,
    no_roofline_reason,
    plan_lines,
    result_with_prediction,
    tensorboard_command,
)
from convdoctor.reports.report import SCHEMA_VERSION, Report
from convdoctor.reports.templating import ENVIRONMENT
from convdoctor.rules.base import evidence_fields

TEMPLATE = "report.html.j2"
VIEW_COLORS = {"kernel": "#3b6fb6", "memcpy": "#7b5ea7", "memset": "#a58fc9", "runtime": "#d9822b",
               "data loader": "#1e7e34", "cpu execution": "#e3b341", "other": "#9aa5b1"}
PART_COLORS = {"convolutions": "#3b6fb6", "layout conversions": "#d9822b", "everything else": "#9aa5b1"}


def load_template() -> None:
    """Compile the page's template now (a tenth of a second, once per process): ``analyze`` does it while the
    first trace is gunzipped in the background."""
    ENVIRONMENT.get_template(TEMPLATE)


def render_html(report: Report) -> str:
    """The report as an HTML page, read from the Report's fields. Every name in it is user data and is escaped by
    the template engine."""
    results = [result_with_prediction(o) for o in report.outcomes]
    plan = plan_lines(report.plan) if report.plan else []
    return ENVIRONMENT.get_template(TEMPLATE).render(
        report=report,
        schema_version=SCHEMA_VERSION,
        headline=headline(report),
        banner=busy_banner(report),
        results=results,
        left_out=left_out_lines(report.plan) if report.plan else [],
        architecture=[architecture_note(o) for o in report.outcomes],
        layer_results=[layer_lines(o) for o in report.outcomes],
        evidence=[evidence_fields(o.finding.evidence) for o in report.outcomes],
        part_colors=PART_COLORS,
        max_layer_ms=max((row.layer.time_per_step_us / 1e3 for row in report.layers), default=1.0) or 1.0,
        tensorboard=tensorboard_command(report.logdir),
        rule_docs=report.rule_docs,
        plan=plan,
        roofline=roofline_chart(report.roofline, report.layers),
        speedups=speedup_chart(report.outcomes, results, report.plan, plan[-1] if plan else None),
        bound_colors=BOUND_COLORS,
        roofline_reason=no_roofline_reason(report.roofline),
        kernel_cells=[kernel_columns(row.kernels) for row in report.layers],
        comm_definitions=COMM_DEFINITIONS,
        memory_charts=memory_charts(report.memory),
        view_colors=VIEW_COLORS,
        overview_definitions=OVERVIEW_DEFINITIONS,
        operator_definitions=OPERATOR_DEFINITIONS,
        compiled_headline=None if report.compiled is None else compiled_headline(report.compiled),
        compiled_cells=[] if report.compiled is None else [compiled_layer_cells(x) for x in report.compiled.layers],
    )
