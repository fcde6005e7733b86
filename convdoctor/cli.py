"""The command line: parse options, call the library, turn user errors into one line and exit code 2."""

from __future__ import annotations

import gc
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import click

from convdoctor.errors import ConvDoctorError
from convdoctor.output import captured_prints
from convdoctor.version import __version__

if TYPE_CHECKING:
    from convdoctor.pipeline import ReportFiles
    from convdoctor.reports.report import Report

EXIT_OK, EXIT_FINDINGS, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
T = TypeVar("T")


class ClickProgress:
    """Stage lines on stderr, and a round counter that rewrites itself on a terminal."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()

    def stage(self, text: str) -> None:
        click.echo(f"convdoctor: {text}…", err=True)

    def rounds(self, done: int, total: int) -> None:
        if self._tty:
            click.echo(f"\r  round {done} (at most {total})", err=True, nl=False)
            if done == total:
                click.echo("", err=True)


SHOW_VIEWS = ("operators",)  # the views `--show` prints after the summary (reports/terminal.py)


def _rule_selection(command: Callable[..., None]) -> Callable[..., None]:
    """The --select/--ignore/--show options that `profile` and `analyze` share."""
    command = click.option("--show", multiple=True, type=click.Choice(SHOW_VIEWS),
                           help="Also print this view after the summary (text format); repeatable.")(command)
    command = click.option("--ignore", multiple=True, metavar="RULE", callback=_rule_entries,
                           help="Skip these rules (id, id prefix or name); repeatable or comma-separated.")(command)
    return click.option("--select", multiple=True, metavar="RULE", callback=_rule_entries,
                        help="Run only these rules (id, id prefix or name); repeatable or comma-separated.")(command)


def _rule_entries(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """``--select CD101,CD109 --select torch-compile`` as entries, each checked against the installed rules."""
    entries = tuple(entry.strip() for value in values for entry in value.split(",") if entry.strip())
    if not entries:
        return entries  # nothing to check: the rules load later, while the first trace is read
    from convdoctor.rules.registry import load_rules, unmatched_entries

    unknown = unmatched_entries(load_rules().rules, entries)
    if unknown:
        raise click.BadParameter(f"no rule matches {', '.join(repr(e) for e in unknown)}; "
                                 "`convdoctor rules` lists the ids and names")
    return entries


@click.group()
@click.version_option(__version__, prog_name="convdoctor")
def main() -> None:
    """Why is my convolution model slow, and how much faster will each fix make it?"""


@main.command("profile")
@click.argument("model_py", type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto picks CUDA when available.")
@click.option("--mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="eval: forward under no_grad; train: forward, backward and an SGD step.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Passed to get_inputs(batch_size).")
@click.option("--steps", type=click.IntRange(min=1, max=50), default=3, show_default=True,
              help="Steps recorded by the profiler (after one wait and one warm-up step).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory [default: convdoctor-out/<model-stem>].")
@click.option("--no-measure", is_flag=True, help="Report findings without trying their candidates.")
@click.option("--time-budget", "time_budget_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Bound the measuring phase; the largest estimated savings are measured first.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=300, show_default=True,
              metavar="SECONDS", help="The most that loading the model file, its first step, the capture, or one "
                                      "candidate's trial may take (0: no limit).")
@click.option("--wait-quiet", "wait_quiet_s", type=click.FloatRange(min=0), default=60, show_default=True,
              metavar="SECONDS", help="The most the run waits, in all, for other processes to leave the cores it "
                                      "times on (0: never); measurements still taken under contention get no "
                                      "verdict.")
@click.option("--thorough", is_flag=True, help="Take every planned block of every comparison (6, and 6 more when "
                                               "undecided) instead of stopping once a verdict is settled.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json prints report.json to stdout.")
@click.option("--fail-under", "fail_under", type=click.FloatRange(min=1.0), default=None, metavar="SPEEDUP",
              help="Exit 1 unless the model is within SPEEDUP of what the measured plan reaches: for CI, fails "
                   "when the plan's whole 95% interval is at or above SPEEDUP.")
@click.option("--nproc", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Workers of a data-parallel job (--mode train): each wraps the model in DistributedDataParallel, "
                   "launched by torch's elastic launcher (torchrun); one trace per rank.")
@click.option("--backend", type=click.Choice(["gloo", "nccl"]), default=None,
              help="Process-group backend with --nproc [default: nccl on CUDA, gloo on the CPU].")
@click.option("--compiled", is_flag=True,
              help="Also profile a torch.compile'd copy of the model and show, per conv layer, what Inductor did "
                   "(on by itself for a model file that returns a compiled model).")
@_rule_selection
def profile_command(model_py: Path, device: str, mode: str, batch_size: int | None, steps: int,
                    out_dir: Path | None, no_measure: bool, time_budget_s: float | None, timeout_s: float,
                    wait_quiet_s: float, thorough: bool, output_format: str, fail_under: float | None, nproc: int,
                    backend: str | None, compiled: bool, select: tuple[str, ...], ignore: tuple[str, ...],
                    show: tuple[str, ...]) -> None:
    """Profile the model that MODEL_PY defines, measure each fix, and write HTML and JSON reports."""
    from convdoctor.analyzer.capture.workload import process_exit_guard
    from convdoctor.api import profile_file
    from convdoctor.options import ProfileOptions

    options = ProfileOptions(device=device, mode=mode, batch_size=batch_size, steps=steps, out_dir=out_dir,
                             measure=not no_measure, time_budget_s=time_budget_s, timeout_s=timeout_s or None,
                             select=select, ignore=ignore, nproc=nproc, backend=backend, wait_quiet_s=wait_quiet_s,
                             thorough=thorough, compiled=compiled)
    with captured_prints() as printed, process_exit_guard():
        try:
            report, files = _or_exit(lambda: profile_file(model_py, options, ClickProgress()))
        finally:
            if printed.summary():
                click.echo(f"convdoctor: note: {printed.summary()}", err=True)
    _show(report, files, output_format, show)
    plan = report.plan.measurement if report.plan is not None else None
    if fail_under is not None and report.busy_machine is not None:
        click.echo("convdoctor: --fail-under did not gate: measurements were taken while other processes kept the "
                   "cores busy (unreliable); rerun on a quiet machine or with a longer --wait-quiet", err=True)
    if fail_under is not None and plan is not None and plan.estimate.ci_low >= fail_under:
        click.echo(f"convdoctor: the measured plan makes this model {plan.estimate.ci_low:.2f}x faster or more "
                   f"(--fail-under {fail_under:g})", err=True)
        sys.exit(EXIT_FINDINGS)


@main.command("analyze")
@click.argument("trace_or_logdir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory [default: convdoctor-out/<trace or log dir name>].")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json prints report.json to stdout (a JSON list when there are several traces).")
@_rule_selection
def analyze_command(trace_or_logdir: Path, out_dir: Path | None, output_format: str, select: tuple[str, ...],
                    ignore: tuple[str, ...], show: tuple[str, ...]) -> None:
    """Analyze Kineto traces captured elsewhere: a *.pt.trace.json[.gz] file or a TensorBoard log dir."""
    from convdoctor.analyzer.trace.reader import start_reading

    reading = _or_exit(lambda: start_reading(trace_or_logdir))  # the first trace is gunzipped while the rest loads
    from convdoctor.pipeline import analyze_path
    from convdoctor.reports.json_report import report_to_dict

    result = _or_exit(lambda: analyze_path(trace_or_logdir, out_dir, ClickProgress(), select, ignore, reading))
    # The process ends after the reports are shown: leave the traces' millions of objects to the OS rather than
    # have the collector's final pass at exit traverse and free them one by one (seconds on a large trace).
    gc.freeze()
    if output_format == "json" and len(result.written) > 1:
        click.echo(json.dumps([report_to_dict(report) for report, _ in result.written], indent=2))
    else:
        for report, files in result.written:
            _show(report, files, output_format, show)
    for problem in result.failed:
        click.echo(f"convdoctor: error: {problem}", err=True)
    if result.failed:
        sys.exit(EXIT_USER_ERROR)


@main.command("diff")
@click.argument("before", type=click.Path(path_type=Path))
@click.argument("after", type=click.Path(path_type=Path))
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None,
              help="Also write the comparison as a self-contained HTML page.")
def diff_command(before: Path, after: Path, html_path: Path | None) -> None:
    """Compare two runs: BEFORE and AFTER are report.json files, or traces (one each)."""
    from convdoctor.pipeline import report_data
    from convdoctor.reports.diff import diff_reports, render_diff_html, render_diff_text
    from convdoctor.reports.files import write_atomically

    diff = _or_exit(lambda: diff_reports(report_data(before), report_data(after), str(before), str(after)))
    click.echo(render_diff_text(diff))
    if html_path is not None:
        write_atomically(html_path, render_diff_html(diff))
        click.echo(f"\nhtml: {html_path}")


@main.command("tensorboard")
@click.argument("out", type=click.Path(path_type=Path), default=Path("convdoctor-out"), required=False)
@click.option("--port", type=click.IntRange(min=0, max=65535), default=6006, show_default=True,
              help="Port on 127.0.0.1; 0 picks a free one.")
def tensorboard_command(out: Path, port: int) -> None:
    """Show the runs under OUT [default: convdoctor-out] in TensorBoard's convdoctor tab, until Ctrl-C."""
    from convdoctor.tensorboard.server import start_tensorboard

    url = _or_exit(lambda: start_tensorboard(out, port))
    click.echo(f"convdoctor: TensorBoard at {url}#convdoctor (Ctrl-C stops it)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


@main.command("rules")
@click.argument("rule_id", required=False)
def rules_command(rule_id: str | None) -> None:
    """List the rules (id, name, summary), or print the doc of RULE_ID."""
    from convdoctor.rules.registry import load_rules

    rule_set = load_rules()
    for problem in rule_set.problems:
        click.echo(f"convdoctor: warning: {problem}", err=True)
    if rule_id is None:
        for rule in rule_set.rules:
            click.echo(f"{rule.id}  {rule.name:<24} {rule.summary}")
        return
    rule = next((r for r in rule_set.rules if rule_id.upper() in (r.id, r.name.upper())), None)
    if rule is None:
        click.echo(f"convdoctor: error: no rule {rule_id!r}; `convdoctor rules` lists them", err=True)
        sys.exit(EXIT_USER_ERROR)
    click.echo(f"{rule.id} {rule.name}: {rule.summary}\n\n{rule.doc}")


def _or_exit(work: Callable[[], T]) -> T:
    """Run the library; a user error becomes one line on stderr and exit code 2."""
    try:
        return work()
    except ConvDoctorError as exc:
        click.echo(f"convdoctor: error: {_with_notes(exc)}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as exc:
        click.echo(f"\nconvdoctor: interrupted: {_notes(exc) or 'no report was written or changed'}", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _with_notes(exc: BaseException) -> str:
    """The exception's message followed by its notes (where this run's traces were set aside), on one line."""
    notes = _notes(exc)
    return f"{exc}; {notes}" if notes else str(exc)


def _notes(exc: BaseException) -> str:
    return "; ".join(getattr(exc, "__notes__", ()))


def _show(report: Report, files: ReportFiles, output_format: str, show: tuple[str, ...] = ()) -> None:
    from convdoctor.reports.terminal import render_summary

    if output_format == "json":  # the report.json just written, rather than building it again (large traces)
        click.echo(files.json.read_text(encoding="utf-8"), nl=False)
    else:
        click.echo(render_summary(report, str(files.html), str(files.json), files.overwrote, show))
