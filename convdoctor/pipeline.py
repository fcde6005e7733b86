"""Analyzing traces captured elsewhere, and writing a report's files: the part of the pipeline without torch.

`convdoctor analyze` runs only this module and what it imports; the profiling pipeline (``convdoctor.api``)
imports torch and reuses the report building and writing here.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from convdoctor.analyzer.conv.job_view import job_view
from convdoctor.analyzer.conv.layers import ConvAnalysis, analyze_convs
from convdoctor.analyzer.conv.roofline import analyze_roofline
from convdoctor.analyzer.trace.collector import collector_paused
from convdoctor.analyzer.trace.reader import (
    TRACE_SUFFIXES,
    Reading,
    find_traces,
    load_profile,
    start_reading,
)
from convdoctor.errors import OutputDirError, ReportError, TraceError
from convdoctor.reports.files import write_atomically
from convdoctor.reports.html_report import load_template, render_html
from convdoctor.reports.json_report import dict_to_json, report_to_dict
from convdoctor.reports.report import (
    FindingOutcome,
    Report,
    RuleDoc,
    WorkloadSummary,
    trace_summary,
)
from convdoctor.rules.base import Rule, doc_sections
from convdoctor.rules.registry import (
    RuleResults,
    RuleSet,
    load_rules,
    run_rules,
    select_rules,
)
from convdoctor.version import __version__


class Progress(Protocol):
    """Where the pipeline says what it is doing."""

    def stage(self, text: str) -> None: ...

    def rounds(self, done: int, total: int) -> None: ...


class SilentProgress:
    """Progress that says nothing (the Python API's default)."""

    def stage(self, text: str) -> None:
        pass

    def rounds(self, done: int, total: int) -> None:
        pass


@dataclass(frozen=True)
class ReportFiles:
    """Where a run's outputs are."""

    out_dir: Path
    html: Path
    json: Path
    logdir: Path
    overwrote: bool


@dataclass(frozen=True)
class AnalyzeResult:
    """The reports `analyze` wrote, and one line for each trace it could not read."""

    written: list[tuple[Report, ReportFiles]]
    failed: list[str]


def analyze_path(path: str | Path, out_dir: Path | None = None, progress: Progress = SilentProgress(),
                 select: tuple[str, ...] = (), ignore: tuple[str, ...] = (), reading: Reading | None = None
                 ) -> AnalyzeResult:
    """Analyze traces captured elsewhere (a trace file or a log dir): one report per trace, nothing measured.

    With several traces (runs, ranks) each report goes to ``<out>/<run>/<worker>/``. The traces of one run that
    are ranks of a job (their communication is in the trace) are also compared: the lowest rank's report carries
    the job view (per-rank communication, stragglers). A trace that cannot be read is named in ``failed`` and the
    others are still analyzed; when none can be read, TraceError. ``reading``: the reading of ``path``, when it
    was started already (``start_reading``: the command line starts it before importing this module).
    """
    path = Path(path)
    runs, reader = reading or start_reading(path)  # the first trace reads while the rules load
    traces = [trace for run in runs for trace in run]
    base = out_dir or Path("convdoctor-out") / path.name.split(".")[0]
    rule_set = load_rules()
    rules = select_rules(rule_set.rules, select, ignore)
    load_template()  # this thread's work while the first trace is read: it would wait otherwise
    written, failed = [], []
    for run in runs:
        with collector_paused():  # the traces' objects live until their reports are written: nothing to collect
            analyzed = []
            for trace in run:
                progress.stage(f"analyzing {trace}")
                try:
                    analyzed.append((trace, analyze_convs(load_profile(trace, reader.take(trace)))))
                except TraceError as exc:
                    failed.append(str(exc))
            if len(analyzed) > 1:
                analyzed.sort(key=lambda pair: _rank_order(*pair))
                analyzed[0][1].job = job_view([analysis for _, analysis in analyzed])
            for trace, analysis in analyzed:
                files = prepare_out_dir(base if len(traces) == 1 else base / _trace_key(path, trace))
                report = _offline_report(analysis, trace, path if path.is_dir() else trace.parent, rule_set, rules)
                write_report(report, files)
                written.append((report, files))
    if not written:
        more = f" (and {len(failed) - 1} more unreadable traces)" if len(failed) > 1 else ""
        raise TraceError(failed[0] + more)
    return AnalyzeResult(written=written, failed=failed)


RANK_IN_NAME = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)


def _rank_order(trace: Path, analysis: ConvAnalysis) -> tuple[int, str]:
    """A trace's rank: Kineto's distributedInfo, convdoctor's record, or ``rank<k>`` in its name; unknown last."""
    info = analysis.profile.metadata.get("distributedInfo")
    for value in (info.get("rank") if isinstance(info, dict) else None, analysis.profile.environment.get("rank")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value, trace.name
    match = RANK_IN_NAME.search(trace.name)
    return (int(match.group(1)) if match else sys.maxsize), trace.name


def report_data(path: str | Path) -> dict[str, Any]:
    """The report.json data of a report file, or of one trace (or a log dir holding one) analyzed in memory."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json" and not path.name.endswith(TRACE_SUFFIXES):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReportError(f"{path}: cannot be read as a report ({exc}); pass a report.json or a trace") from exc
        if not isinstance(data, dict) or "schema_version" not in data or "layers" not in data:
            raise ReportError(f"{path}: is JSON but not a convdoctor report.json; pass a report.json or a trace")
        return data
    traces = find_traces(path)
    if len(traces) > 1:
        raise ReportError(f"{path}: holds {len(traces)} traces; pass one trace (or one worker's report.json)")
    return report_to_dict(analyze_trace(traces[0]))


def analyze_trace(trace: Path) -> Report:
    """One trace analyzed offline with every rule, nothing measured (what `analyze` reports), written nowhere."""
    rule_set = load_rules()
    with collector_paused():
        analysis = analyze_convs(load_profile(trace))
        return _offline_report(analysis, trace, trace.parent, rule_set, rule_set.rules)


def _offline_report(analysis: ConvAnalysis, trace: Path, logdir: Path, rule_set: RuleSet, rules: list[Rule]
                    ) -> Report:
    results = run_rules(rules, analysis)
    offline = "analyzed offline from a trace: run `convdoctor profile model.py` to measure it"
    outcomes = [FindingOutcome(finding, not_measured=offline) for finding in results.findings]
    return build_report(analysis, trace_summary(analysis, trace), outcomes, [trace], logdir, results, rule_set)


def _trace_key(logdir: Path, trace: Path) -> Path:
    """``run/worker`` for a trace under a log dir: where its report goes."""
    return trace.relative_to(logdir).parent / trace.name.split(".pt.trace")[0]


def build_report(analysis: ConvAnalysis, summary: WorkloadSummary, outcomes: list[FindingOutcome], traces: list[Path],
            logdir: Path, results: RuleResults, rule_set: RuleSet) -> Report:
    return Report(
        tool_version=__version__,
        workload=summary,
        analysis=analysis,
        outcomes=outcomes,
        trace_files=[str(t) for t in traces],
        logdir=str(logdir),
        skipped_rules=results.skipped,
        rule_problems=rule_set.problems + results.problems,
        rule_docs=[RuleDoc(r.id, r.name, r.summary, doc_sections(r.doc)) for r in rule_set.rules
                   if any(o.finding.rule_id == r.id for o in outcomes)],
        roofline=analyze_roofline(analysis),
    )


def write_report(report: Report, files: ReportFiles) -> None:
    data = report_to_dict(report)  # built once for both files: it reads every layer's kernels
    write_atomically(files.json, dict_to_json(data))
    write_atomically(files.html, render_html(report, data))


def prepare_out_dir(out_dir: Path) -> ReportFiles:
    """Create the out dir and prove it writable before any work is done."""
    files = ReportFiles(out_dir=out_dir, html=out_dir / "report.html", json=out_dir / "report.json",
                        logdir=out_dir / "tb", overwrote=(out_dir / "report.json").exists())
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise OutputDirError(f"{out_dir}: cannot write reports there ({exc.strerror}); pass --out DIR") from exc
    if not os.access(out_dir, os.W_OK):
        raise OutputDirError(f"{out_dir}: cannot write reports there; pass --out DIR")
    return files

