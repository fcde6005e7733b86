"""The short terminal summary: slowest conv layers, findings with measured results, where the files are."""

from __future__ import annotations

import shutil

import click

from convdoctor.analyzer.conv.job_view import JobView
from convdoctor.analyzer.conv.roofline import LayerRoofline
from convdoctor.analyzer.step.critical_path import CriticalPath
from convdoctor.reports.presentation import (
    architecture_note,
    busy_banner,
    compiled_headline,
    compiled_layer_line,
    headline,
    layer_lines,
    left_out_lines,
    memory_peak_line,
    plan_lines,
    result_with_prediction,
    tensorboard_command,
    throughput_lines,
)
from convdoctor.reports.report import Report, ReportLayer

TOP_LAYERS = 5
TOP_STREAMS = 4
VERDICT_COLORS = {" faster ": "green", " slower ": "red"}


def render_summary(report: Report, html_path: str, json_path: str, overwrote: bool, show: tuple[str, ...] = ()
                   ) -> str:
    """A summary that fits one screen, with the views ``show`` names ("operators") after it."""
    analysis = report.analysis
    banner = busy_banner(report)
    lines = ([click.style(banner, fg="yellow", bold=True), ""] if banner else []) + [
        click.style(headline(report), bold=True), ""]
    if report.layers:
        top = report.layers[:TOP_LAYERS]
        width = min(max(len(item.layer.name) for item in top), 48)
        rows = [_layer_row(item, width) for item in top]
        roof = [_roofline_cell(item.roofline) for item in top]
        fits = max(len(row) for row in rows) + len(roof[0]) <= shutil.get_terminal_size((120, 24)).columns
        if any(item.roofline for item in top) and fits:
            lines.append(f"Slowest conv layers ({analysis.time_basis.value} time per step; bound and % of the "
                         f"roofline from {report.roofline.peaks.source.value} peaks):")
            lines += [row + cell for row, cell in zip(rows, roof)]
        else:
            lines.append(f"Slowest conv layers ({analysis.time_basis.value} time per step):")
            lines += [row.rstrip() for row in rows]
        lines.append("")
    lines += [f"note: {note}" for note in report.notes] + ([""] if report.notes else [])
    if report.compiled is not None:
        lines += _compiled(report) + [""]
    if report.memory is not None and report.memory.devices:
        lines += [memory_peak_line(report.memory), ""]
    hta = _hta(report)
    lines += hta + ([""] if hta else [])
    if analysis.job is not None:
        lines += _ranks(analysis.job)
    for outcome in report.outcomes:
        f = outcome.finding
        lines.append(f"{f.rule_id} {f.rule_name}: {f.message}")
        lines.append(f"  fix: {f.fix} -> {_colored(result_with_prediction(outcome))}")
        lines += [f"    {line}" for line in layer_lines(outcome)]
        if outcome.throughput is not None:
            lines += [f"    {line}" for line in throughput_lines(outcome.throughput)]
            lines.append("    (a workload change, not a plan step: check that the larger batch fits your data "
                         "and training)")
        if outcome.architecture is not None:
            lines.append(f"  {architecture_note(outcome)}")
        elif outcome.measurement is not None and outcome.numerics_ok is False:
            numerics = outcome.measurement.numerics
            grads = f", gradients {numerics.max_grad_rel_error:.3g}" if numerics.max_grad_rel_error is not None else ""
            lines.append(f"  numerics beyond tolerance {f.candidate.tolerance if f.candidate else '?'}: outputs "
                         f"{numerics.max_rel_error:.3g}{grads} (max relative error)")
            reference = numerics.gradient_reference
            if reference is not None:
                step = ("" if reference.same_step is None else
                        ", the same step in float64" if reference.rounding_only else ", another step in float64")
                lines.append(f"  gradients against float64: {reference.candidate_error:.3g} at "
                             f"{reference.worst_parameter} (baseline {reference.baseline_error:.3g}){step}")
    if not report.outcomes:
        lines.append("No findings.")
    if report.plan is not None:
        *steps, together = plan_lines(report.plan)
        lines += ["", click.style("Plan (accepted fixes, measured together):", bold=True),
                  *(f"  {number}. {step}" for number, step in enumerate(steps, start=1)), f"  {_colored(together)}",
                  *(f"  {line}" for line in left_out_lines(report.plan))]
    for problem in report.rule_problems:
        lines.append(f"warning: {problem}")
    lines += [
        "",
        f"report: {html_path}" + ("  (overwrote the previous report)" if overwrote else ""),
        f"json:   {json_path}",
        f"traces: {report.logdir}  ->  {tensorboard_command(report.logdir)}",
    ]
    if "operators" in show:
        lines += _operators(report)
    return "\n".join(lines)


def _compiled(report: Report) -> list[str]:
    """The compiled step against the eager one, and what compile did to the slowest conv layers."""
    view, shown = report.compiled, report.compiled_shown
    width = min(max((len(layer.name) for layer in shown.rows), default=0), 40)
    lines = [compiled_headline(view)]
    lines += [f"  {layer.name[:40]:<{width}}  {compiled_layer_line(layer)}" for layer in shown.rows]
    if shown.more:
        lines.append(f"  and {shown.more} more conv layers in the report")
    if view.folded:
        lines.append(f"  BatchNorm with no call of its own (folded into its conv): {', '.join(view.folded)}")
    lines.append(f"  kernels attributed to layers by {' and '.join(view.attributions) or 'nothing'}")
    lines += [f"  note: {note}" for note in view.notes]
    return lines


def _operators(report: Report) -> list[str]:
    """The operators with the most host time, over the whole trace."""
    if report.views is None:
        return ["", "Operators: not in this report"]
    views = report.views
    listed = views.operators_listed
    if not listed.rows:
        return ["", "Operators: the trace has no PyTorch operators (cpu_op events)"]
    steps = views.operators.steps
    width = min(max(len(r.name) for r in listed.rows), 48)
    lines = ["", f"Operators by host total time, summed over the trace ({steps} step{'s' if steps != 1 else ''}; ms):",
             f"  {'operator':<{width}}  {'calls':>7}  {'host self':>10}  {'host total':>10}  {'device self':>11}  "
             f"{'device total':>12}"]
    lines += [f"  {r.name[:48]:<{width}}  {r.calls:>7}  {r.host_self_us / 1e3:>10.3f}  {r.host_total_us / 1e3:>10.3f}  "
              f"{r.device_self_us / 1e3:>11.3f}  {r.device_total_us / 1e3:>12.3f}" for r in listed.rows]
    if listed.more:
        lines.append(f"  and {listed.more} more operators in the report")
    return lines


def _ranks(job: JobView) -> list[str]:
    """A line per rank with a small bar of its work and exposed communication, and the straggler verdict."""
    longest = max(r.step_us for r in job.ranks) or 1.0
    lines = [f"Ranks ({job.world_size}, {job.backend}): communication {job.comm_share:.0%} of a step, "
             f"{job.overlap_fraction:.0%} of it overlapping compute (# work, ~ exposed communication):"]
    for r in job.ranks:
        work, exposed = round(30 * r.work_us / longest), round(30 * r.exposed_comm_us / longest)
        lines.append(f"  rank {r.rank}  {'#' * work}{'~' * exposed}{' ' * max(0, 30 - work - exposed)}  "
                     f"step {r.step_us / 1e3:.1f} ms, communication {r.comm_us / 1e3:.1f} ms "
                     f"({r.overlap_fraction:.0%} overlapped)")
    return lines + [f"  {job.verdict}", ""]


def _hta(report: Report) -> list[str]:
    """A line per HTA-class view that finds something (report.html has the tables)."""
    views = report.hta
    if views is None:
        return []
    lines = []
    streams = [s for s in views.idle.streams if s.idle_us > 0]
    if streams:
        shown = "; ".join(f"stream {s.stream}: host wait {s.host_wait_us / 1e3:.2f}, kernel wait "
                          f"{s.kernel_wait_us / 1e3:.2f}, other {s.other_us / 1e3:.2f}" for s in streams[:TOP_STREAMS])
        more = f" (+{len(streams) - TOP_STREAMS} streams)" if len(streams) > TOP_STREAMS else ""
        lines.append(f"Idle time (ms, whole trace): {shown}{more}")
    launches = views.launches
    if launches is not None and (launches.short or launches.delay_outliers):
        lines.append(f"Launches: {launches.short} of {launches.launches} kernels shorter than their launch call; "
                     f"{launches.delay_outliers} launch delays over {launches.launch_delay_cutoff_us:g} \u00b5s")
    starved = [q for q in views.queues if q.empty_share >= 0.5]
    if starved:
        lines.append("Queue: " + "; ".join(f"stream {q.stream} empty {q.empty_share:.0%} of the time (max "
                                           f"{q.max_length})" for q in starved[:TOP_STREAMS]))
    syncs = views.syncs
    if syncs.count:
        top = syncs.sites[0]
        where = f" at {top.source}" if top.source else ""
        lines.append(f"Synchronizations: {syncs.count} over {syncs.steps} step(s) blocked the host "
                     f"{syncs.blocked_us / 1e3:.2f} ms; most in {top.call} under {top.operator}{where}")
    pageable = views.pageable
    if pageable.copies:
        lines.append(f"Pageable host-to-device copies: {pageable.copies} over {pageable.steps} step(s), "
                     f"{pageable.copy_us / 1e3:.2f} ms copying, {pageable.call_us / 1e3:.2f} ms in their calls")
    path = views.critical_path
    if isinstance(path, CriticalPath):
        lines.append(f"Critical path per step: {path.path_us / 1e3:.2f} ms = host {path.host_us / 1e3:.2f} + device "
                     f"{path.device_us / 1e3:.2f} + waiting {path.waiting_us / 1e3:.2f}"
                     + (f" + unattributed {path.unattributed_us / 1e3:.2f}" if path.unattributed_us else ""))
    return lines


def _layer_row(row: ReportLayer, width: int) -> str:
    """``  layer1.0.conv1  1.234 ms  12.3%  0.12 GFLOP  contiguous``: a slow layer's line, before its roofline cell."""
    layer = row.layer
    gflop = f"{layer.flops / 1e9:7.2f} GFLOP" if layer.flops else "      ? GFLOP"
    return (f"  {layer.name[:48]:<{width}}  {layer.time_per_step_us / 1e3:8.3f} ms  {row.share:5.1%}  {gflop}  "
            f"{layer.memory_format.value:<13}")


def _roofline_cell(point: LayerRoofline | None) -> str:
    """``  memory    42%``: bound and % of the roofline, 15 characters; ``?`` where the layer has no roofline."""
    if point is None:
        return f"  {'?':<7}  {'?':>4}"
    return f"  {point.bound.value:<7}  {point.pct_of_roofline:>3.0f}%"


def _colored(result: str) -> str:
    """The result with its verdict colored; click.echo drops the color when the output is not a terminal."""
    for word, color in VERDICT_COLORS.items():
        if word in result:
            return click.style(result, fg=color)
    return result
