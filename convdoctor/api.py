"""The pipeline as a Python API: load, capture, parse, attribute, run rules, measure candidates, report."""

from __future__ import annotations

import json
import os
import time
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

import convdoctor
from convdoctor.analyzer.benchmark import BenchmarkSettings, Verdict, measure
from convdoctor.analyzer.capture import capture, check_fits, environment
from convdoctor.analyzer.collector import collector_paused
from convdoctor.analyzer.layers import ConvAnalysis, analyze_convs
from convdoctor.analyzer.model_cost import ArchitectureDelta, model_cost
from convdoctor.analyzer.roofline import analyze_roofline
from convdoctor.analyzer.trace import TRACE_SUFFIXES, find_traces, load_profile
from convdoctor.analyzer.workload import Inputs, Workload, describe_exception, load_workload, workload_from
from convdoctor.errors import OutputDirError, ReportError, TraceError
from convdoctor.reports.files import write_atomically
from convdoctor.reports.html_report import render_html
from convdoctor.reports.json_report import report_to_dict, report_to_json
from convdoctor.reports.report import FindingOutcome, Plan, Report, RuleDoc, WorkloadSummary, trace_summary
from convdoctor.rules.base import Finding, NumericsContract, Rule, combine, doc_sections
from convdoctor.rules.registry import RuleResults, RuleSet, load_rules, run_rules, select_rules


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
class ProfileOptions:
    """Everything `convdoctor profile` can be told."""

    device: str = "auto"
    mode: str = "eval"
    batch_size: int | None = None
    steps: int = 3
    out_dir: Path | None = None  # default: convdoctor-out/<model name>
    measure: bool = True
    time_budget_s: float | None = None  # for the whole measuring phase; None: measure every candidate
    select: tuple[str, ...] = ()  # rule ids/prefixes/names to run (all when empty)
    ignore: tuple[str, ...] = ()
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)


@dataclass(frozen=True)
class ReportFiles:
    """Where a run's outputs are."""

    out_dir: Path
    html: Path
    json: Path
    logdir: Path
    overwrote: bool


def profile_file(
    path: str | Path, options: ProfileOptions = ProfileOptions(), progress: Progress = SilentProgress()
) -> tuple[Report, ReportFiles]:
    """Profile the model a model file defines; write report.html, report.json and traces to the out dir."""
    path = Path(path)
    out_dir = options.out_dir or Path("convdoctor-out") / path.stem
    files = _prepare_out_dir(out_dir)
    progress.stage(f"loading {path}")
    workload = load_workload(path, device=options.device, mode=options.mode, batch_size=options.batch_size)
    return _run(workload, options, files, progress), files


def profile(
    model: nn.Module, inputs: Inputs, options: ProfileOptions = ProfileOptions(),
    progress: Progress = SilentProgress(),
) -> tuple[Report, ReportFiles]:
    """Profile a model object on example inputs; neither is modified."""
    out_dir = options.out_dir or Path("convdoctor-out") / type(model).__name__
    files = _prepare_out_dir(out_dir)
    workload = workload_from(model, inputs, device=options.device, mode=options.mode,
                             source=f"{type(model).__module__}.{type(model).__name__}")
    return _run(workload, options, files, progress), files


@dataclass(frozen=True)
class AnalyzeResult:
    """The reports `analyze` wrote, and one line for each trace it could not read."""

    written: list[tuple[Report, ReportFiles]]
    failed: list[str]


def analyze_path(path: str | Path, out_dir: Path | None = None, progress: Progress = SilentProgress(),
                 select: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> AnalyzeResult:
    """Analyze traces captured elsewhere (a trace file or a log dir): one report per trace, nothing measured.

    With several traces (runs, ranks) each report goes to ``<out>/<run>/<worker>/``. A trace that cannot be
    read is named in ``failed`` and the others are still analyzed; when none can be read, TraceError.
    """
    path = Path(path)
    traces = find_traces(path)
    base = out_dir or Path("convdoctor-out") / path.name.split(".")[0]
    rule_set = load_rules()
    rules = select_rules(rule_set.rules, select, ignore)
    written, failed = [], []
    for trace in traces:
        progress.stage(f"analyzing {trace}")
        with collector_paused():  # the trace's objects live until its report is written: nothing to collect
            try:
                analysis = analyze_convs(load_profile(trace))
            except TraceError as exc:
                failed.append(str(exc))
                continue
            files = _prepare_out_dir(base if len(traces) == 1 else base / _trace_key(path, trace))
            report = _offline_report(analysis, trace, path if path.is_dir() else trace.parent, rule_set, rules)
            _write(report, files)
        written.append((report, files))
    if not written:
        more = f" (and {len(failed) - 1} more unreadable traces)" if len(failed) > 1 else ""
        raise TraceError(failed[0] + more)
    return AnalyzeResult(written=written, failed=failed)


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
    rule_set = load_rules()
    with collector_paused():
        analysis = analyze_convs(load_profile(traces[0]))
        return report_to_dict(_offline_report(analysis, traces[0], traces[0].parent, rule_set, rule_set.rules))


def _offline_report(analysis: ConvAnalysis, trace: Path, logdir: Path, rule_set: RuleSet, rules: list[Rule]
                    ) -> Report:
    results = run_rules(rules, analysis)
    offline = "analyzed offline from a trace: run `convdoctor profile model.py` to measure it"
    outcomes = [FindingOutcome(finding, not_measured=offline) for finding in results.findings]
    return _report(analysis, trace_summary(analysis, trace), outcomes, [trace], logdir, results, rule_set)


def _trace_key(logdir: Path, trace: Path) -> Path:
    """``run/worker`` for a trace under a log dir: where its report goes."""
    return trace.relative_to(logdir).parent / trace.name.split(".pt.trace")[0]


def _run(workload: Workload, options: ProfileOptions, files: ReportFiles, progress: Progress) -> Report:
    progress.stage("checking that the inputs fit the model")
    check_fits(workload)
    progress.stage(f"capturing {options.steps} {workload.mode.value} steps under torch.profiler")
    run_name = f"{Path(workload.source).stem}-{workload.mode.value}-{workload.device.type}"
    traces = capture(workload, files.logdir, run_name, steps=options.steps)
    progress.stage("analyzing the trace")
    analysis = analyze_convs(load_profile(traces[0]))
    rule_set = load_rules()
    results = run_rules(select_rules(rule_set.rules, options.select, options.ignore), analysis)
    outcomes = measure_findings(workload, results.findings, options, progress)
    report = _report(analysis, _summary(workload, options), outcomes, traces, files.logdir, results, rule_set)
    report.plan = build_plan(workload, outcomes, options, progress)
    _write(report, files)
    return report


def _report(analysis: ConvAnalysis, summary: WorkloadSummary, outcomes: list[FindingOutcome], traces: list[Path],
            logdir: Path, results: RuleResults, rule_set: RuleSet) -> Report:
    return Report(
        tool_version=convdoctor.__version__,
        workload=summary,
        analysis=analysis,
        outcomes=outcomes,
        trace_files=[str(t) for t in traces],
        logdir=str(logdir),
        skipped_rules=results.skipped,
        rule_problems=rule_set.problems,
        rule_docs=[RuleDoc(r.id, r.name, r.summary, doc_sections(r.doc)) for r in rule_set.rules
                   if any(o.finding.rule_id == r.id for o in outcomes)],
        roofline=analyze_roofline(analysis),
    )


def _write(report: Report, files: ReportFiles) -> None:
    write_atomically(files.json, report_to_json(report))
    write_atomically(files.html, render_html(report))


def measure_findings(
    workload: Workload, findings: list[Finding], options: ProfileOptions, progress: Progress
) -> list[FindingOutcome]:
    """Try each finding's candidate, the largest estimated saving first, until the time budget runs out.

    Outcomes come back in the order of ``findings``.
    """
    started = time.perf_counter()
    by_priority = sorted(range(len(findings)), key=lambda i: -(findings[i].estimated_saving or 0.0))
    outcomes: dict[int, FindingOutcome] = {}
    by_transform: dict[int, FindingOutcome] = {}  # rules that propose the same transform share one measurement
    for index in by_priority:
        finding = findings[index]
        spent = time.perf_counter() - started
        earlier = by_transform.get(id(finding.candidate.transform)) if finding.candidate else None
        if earlier is not None:
            outcomes[index] = replace(earlier, finding=finding, same_candidate_as=earlier.finding.rule_id)
        elif finding.candidate is None:
            outcomes[index] = FindingOutcome(finding, not_measured="this finding has no automatic candidate")
        elif not options.measure:
            outcomes[index] = FindingOutcome(finding, not_measured="measuring was turned off (--no-measure)")
        elif options.time_budget_s is not None and spent >= options.time_budget_s:
            outcomes[index] = FindingOutcome(
                finding, not_measured=f"the measuring time budget ({options.time_budget_s:g} s) ran out before "
                                      "this candidate; raise --time-budget to measure it")
        else:
            outcomes[index] = by_transform[id(finding.candidate.transform)] = _try_candidate(
                workload, finding, options, progress)
    return [outcomes[i] for i in range(len(findings))]


def build_plan(
    workload: Workload, outcomes: list[FindingOutcome], options: ProfileOptions, progress: Progress
) -> Plan | None:
    """Combine every accepted candidate into one and measure it: speedups do not multiply.

    Accepted: measured faster, numerics within tolerance, and not an architecture change (no retraining).
    """
    accepted = [o for o in outcomes if o.measurement is not None and o.numerics_ok and o.same_candidate_as is None
                and o.measurement.estimate.verdict is Verdict.FASTER and o.architecture is None]
    if not accepted:
        return None
    steps = sorted(accepted, key=lambda o: -o.measurement.estimate.speedup)
    if len(steps) == 1:
        only = steps[0]
        return Plan(steps=steps, measurement=only.measurement, numerics_ok=only.numerics_ok,
                    tolerance=only.finding.candidate.tolerance)
    combined = combine([o.finding.candidate for o in steps])
    progress.stage(f"measuring the combined plan: {combined.title}")
    try:
        result = measure(workload, combined.transform(workload.copy()), options.benchmark, progress=progress.rounds)
    except Exception as exc:  # the combination may fail where each step alone did not
        return Plan(steps=steps, tolerance=combined.tolerance,
                    not_measured=f"the combined candidate failed: {describe_exception(exc)}")
    return Plan(steps=steps, measurement=result, numerics_ok=result.numerics.within(combined.tolerance),
                tolerance=combined.tolerance)


def _try_candidate(
    workload: Workload, finding: Finding, options: ProfileOptions, progress: Progress
) -> FindingOutcome:
    candidate = finding.candidate
    assert candidate is not None
    progress.stage(f"measuring {finding.rule_id} {finding.rule_name}: baseline vs {candidate.title}")
    try:
        trial = candidate.transform(workload.copy())
        result = measure(workload, trial, options.benchmark, progress=progress.rounds)
        if candidate.numerics is NumericsContract.ARCHITECTURE:
            delta = ArchitectureDelta(before=model_cost(workload), after=model_cost(trial))
            return FindingOutcome(finding, measurement=result, architecture=delta)
    except Exception as exc:  # a candidate may fail in any way (OOM included); the run goes on
        if workload.device.type == "cuda":
            torch.cuda.empty_cache()
        return FindingOutcome(finding, not_measured=f"the candidate failed: {describe_exception(exc)}")
    ok = result.numerics.within(candidate.tolerance)
    return FindingOutcome(finding, measurement=result, numerics_ok=ok)


def _summary(workload: Workload, options: ProfileOptions) -> WorkloadSummary:
    env = environment(workload)
    return WorkloadSummary(
        model_file=workload.source,
        device=env["device"],
        device_name=env["device_name"],
        mode=env["mode"],
        batch_size=env["batch_size"],
        dtype=env["dtype"],
        steps=options.steps,
        torch_version=env["torch_version"],
        threads=env["threads"],
    )


def _prepare_out_dir(out_dir: Path) -> ReportFiles:
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

