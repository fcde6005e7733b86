"""The pipeline, wired once: ``analyze_path`` (traces from elsewhere), ``profile_workload`` (one process) and
``profile_job`` (every rank of a data-parallel job) each run trace → conv analysis → rules → measuring → report.

`convdoctor analyze` never imports torch: the stages that do (capture, candidates, measure) are imported only for
type checking here and inside the two profiling functions.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convdoctor.analyzer.capture.contention import QuietPolicy, cpu_jiffies, other_cores_busy
from convdoctor.analyzer.conv.compiled import compiled_view
from convdoctor.analyzer.conv.job_view import job_view, trace_rank
from convdoctor.analyzer.conv.kernels import LayerKernels, kernel_totals, layer_kernels
from convdoctor.analyzer.conv.layers import ConvAnalysis, analyze_convs
from convdoctor.analyzer.conv.roofline import Roofline, analyze_roofline
from convdoctor.analyzer.step.hta import NO_GPU, hta_views
from convdoctor.analyzer.step.kernels import kernels as kernel_view
from convdoctor.analyzer.step.memory import memory_view
from convdoctor.analyzer.step.modules import module_view
from convdoctor.analyzer.step.operators import operators as operator_view
from convdoctor.analyzer.step.overview import overview
from convdoctor.analyzer.trace.collector import collector_paused
from convdoctor.analyzer.trace.profile import Profile
from convdoctor.analyzer.trace.reader import (
    TRACE_SUFFIXES,
    Reading,
    find_traces,
    load_profile,
    start_reading,
)
from convdoctor.errors import JobError, OutputDirError, ReportError, TraceError
from convdoctor.progress import Progress, SilentProgress
from convdoctor.reports.files import write_atomically
from convdoctor.reports.html_report import load_template, render_html
from convdoctor.reports.json_report import dict_to_json, report_to_dict
from convdoctor.reports.report import (
    BusyMachine,
    FindingOutcome,
    Report,
    ReportLayer,
    RuleDoc,
    Shown,
    StepPart,
    StepViews,
    WorkloadSummary,
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

if TYPE_CHECKING:
    from convdoctor.analyzer.capture.recording import PendingTraces
    from convdoctor.analyzer.capture.workload import Workload
    from convdoctor.options import ProfileOptions


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
                    analyzed.append((trace, analyzed_profile(load_profile(trace, reader.take(trace)))))
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
    rank = trace_rank(analysis.profile)
    if rank is not None:
        return rank, trace.name
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
        if isinstance(data, (dict, list)) and (isinstance(data, list) or "traceEvents" in data):
            return report_to_dict(analyze_trace(path))  # a trace named *.json (HTA's rank-N.json)
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
        analysis = analyzed_profile(load_profile(trace))
        return _offline_report(analysis, trace, trace.parent, rule_set, rule_set.rules)


def analyzed_profile(profile: Profile) -> ConvAnalysis:
    """The conv analysis of a profile, with the compiled view of a compiled model's trace."""
    analysis = analyze_convs(profile)
    analysis.compiled = compiled_view(profile)
    return analysis


def _offline_report(analysis: ConvAnalysis, trace: Path, logdir: Path, rule_set: RuleSet, rules: list[Rule]
                    ) -> Report:
    results = run_rules(rules, analysis)
    offline = "analyzed offline from a trace: run `convdoctor profile model.py` to measure it"
    outcomes = [FindingOutcome(finding, not_measured=offline) for finding in results.findings]
    return build_report(analysis, trace_summary(analysis, trace), outcomes, [trace], logdir, results, rule_set)


def _trace_key(logdir: Path, trace: Path) -> Path:
    """``run/worker`` for a trace under a log dir: where its report goes."""
    return trace.relative_to(logdir).parent / trace.name.split(".pt.trace")[0].removesuffix(".gz").removesuffix(".json")


def build_report(analysis: ConvAnalysis, summary: WorkloadSummary, outcomes: list[FindingOutcome], traces: list[Path],
            logdir: Path, results: RuleResults, rule_set: RuleSet) -> Report:
    """Everything the reports show, computed here: the renderers read its fields."""
    kernels = layer_kernels(analysis)
    roofline = analyze_roofline(analysis)
    hta = hta_views(analysis.profile)
    return Report(
        tool_version=__version__,
        workload=summary,
        analysis=analysis,
        outcomes=outcomes,
        trace_files=[str(t) for t in traces],
        logdir=str(logdir),
        layers=_report_layers(analysis, roofline, kernels),
        step_parts=_step_parts(analysis),
        steps_from=_steps_from(analysis.profile),
        rank=trace_rank(analysis.profile),
        notes=list(analysis.notes) + list(roofline.notes),
        skipped_rules=results.skipped,
        rule_problems=rule_set.problems + results.problems,
        rule_docs=[RuleDoc(r.id, r.name, r.summary, doc_sections(r.doc)) for r in rule_set.rules
                   if any(o.finding.rule_id == r.id for o in outcomes)],
        roofline=roofline,
        kernel_totals=kernel_totals(kernels),
        modules=module_view(analysis),
        memory=memory_view(analysis.profile),
        views=step_views(analysis.profile),
        hta=hta,
        hta_reason=NO_GPU if hta is None else None,
        compiled=analysis.compiled,
        compiled_shown=(None if analysis.compiled is None
                        else _shown(analysis.compiled.slowest_first, COMPILED_LAYERS_LISTED)),
    )


SHOWN_ROWS = 50  # rows of each whole-step table the HTML shows (report.json has all of them)
LISTED_OPERATORS = 10  # operators `--show operators` prints
COMPILED_LAYERS_LISTED = 5  # conv layers of the compiled view the terminal lists


def step_views(profile: Profile) -> StepViews:
    """The Overview, Operators and Kernels views, and the rows of each the HTML shows."""
    operators = operator_view(profile)
    kernels = kernel_view(profile)
    return StepViews(
        overview=overview(profile), operators=operators, kernels=kernels,
        operators_shown=_shown(operators.by_name, SHOWN_ROWS),
        operators_listed=_shown(operators.by_name, LISTED_OPERATORS),
        shapes_shown=_shown(operators.by_shape, SHOWN_ROWS),
        kernels_shown=None if kernels is None else _shown(kernels.rows, SHOWN_ROWS))


def _shown(rows: tuple[Any, ...], limit: int) -> Shown[Any]:
    return Shown(rows[:limit], max(len(rows) - limit, 0))


def _report_layers(analysis: ConvAnalysis, roofline: Roofline, kernels: dict[str, LayerKernels]
                   ) -> list[ReportLayer]:
    """Each layer with its share of the step, its passes per step, its roofline and its device kernels."""
    steps = analysis.profile.step_count
    return [ReportLayer(layer, share=analysis.share(layer.time_per_step_us), forward_ms=layer.forward_us / 1e3 / steps,
                        backward_ms=layer.backward_us / 1e3 / steps, roofline=roofline.layers.get(layer.name),
                        kernels=kernels.get(layer.name))
            for layer in analysis.layers]


def _step_parts(analysis: ConvAnalysis) -> list[StepPart]:
    """Where a step goes: convolutions (less their layout conversions), layout conversions, everything else."""
    parts = (("convolutions", analysis.conv_time_us - analysis.conversion_time_us),
             ("layout conversions", analysis.conversion_time_us), ("everything else", analysis.other_time_us))
    return [StepPart(name, us, analysis.share(us)) for name, us in parts]


def _steps_from(profile: Profile) -> str:
    """Where the report's steps come from: the trace's ProfilerStep marks, iterations found from its repeating conv
    calls, or (neither) the whole traced span as one step."""
    if profile.steps_inferred:
        return "repeating conv calls"
    return "ProfilerStep" if profile.steps else "whole trace"


def trace_summary(analysis: ConvAnalysis, trace: Path) -> WorkloadSummary:
    """What a trace captured elsewhere tells of its workload; what it does not tell is 'unknown'.

    Traces that convdoctor captured carry their environment; others are read from their events.
    """
    profile = analysis.profile
    recorded = profile.environment
    props = profile.device_properties
    first = analysis.layers[0] if analysis.layers else None
    on_gpu = profile.has_device_events or profile.kernel_launches > 0  # a GPU run without kernel records too
    return WorkloadSummary(
        model_file=str(trace),
        device=recorded.device or ("cuda" if on_gpu else "cpu"),
        device_name=recorded.device_name
        or (str(props[0].get("name", "unknown")) if on_gpu and props else "unknown"),
        mode=analysis.mode,
        batch_size=(recorded.batch_size if recorded.recorded
                    else first.input_shape[0] if first and first.input_shape else None),
        dtype=recorded.dtype or (first.dtype if first else "unknown"),
        steps=profile.step_count,
        torch_version=recorded.torch_version or "unknown (not recorded in the trace)",
        threads=recorded.threads,
        allocator=recorded.allocator,
        heap_kept=recorded.heap_kept is True,
    )


def write_report(report: Report, files: ReportFiles) -> None:
    write_atomically(files.json, dict_to_json(report_to_dict(report)))
    write_atomically(files.html, render_html(report))


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


def profile_workload(workload: Workload, options: ProfileOptions, files: ReportFiles, progress: Progress) -> Report:
    """Capture the workload, analyze its trace, run the rules, measure their candidates and the plan, write the
    report; on any failure (Ctrl-C included) the previous report stays and this run's traces are set aside."""
    import torch

    from convdoctor.analyzer.capture.recording import check_fits, record, settled_allocator
    from convdoctor.analyzer.capture.workload import make_step, time_limit
    from convdoctor.analyzer.measure.layout_probe import time_leaf_layouts
    from convdoctor.analyzer.measure.phase import measure_findings
    from convdoctor.analyzer.measure.plan import build_plan
    from convdoctor.rules.base import Probe, wanted_probes

    progress.stage("checking that the inputs fit the model")
    with time_limit(options.timeout_s, "the model's first step"):
        check_fits(workload)
    with time_limit(options.timeout_s, "the model's first steps"):
        allocator_record = settled_allocator(make_step(workload.copy()))  # before anything is timed
    run_name = f"{Path(workload.source).stem}-{workload.mode.value}-{workload.device.type}"
    quiet = QuietPolicy(options.wait_quiet_s, torch.get_num_threads(), progress.stage)
    measuring = options.measuring(quiet)
    quiet.settle("timing the model")  # the layout probe, the roofs, the trace and every block are timings
    rule_set = load_rules()
    rules = select_rules(rule_set.rules, options.select, options.ignore)
    layout_probe = None
    started, before = time.perf_counter(), cpu_jiffies()
    if options.measure and Probe.LAYOUT in wanted_probes(rules):  # a probe is a measurement: --no-measure skips it
        progress.stage("timing each layer alone, in its layout and in channels_last")
        with time_limit(options.timeout_s, "the layout probe"):
            layout_probe = time_leaf_layouts(workload)
    progress.stage(f"capturing {options.steps} {workload.mode.value} steps under torch.profiler")
    with time_limit(options.timeout_s, "the profiled steps"):
        traces = record(workload, files.logdir, run_name, steps=options.steps, layout_probe=layout_probe,
                        allocator_record=allocator_record, quiet=quiet)
    timing_busy = other_cores_busy(before, cpu_jiffies(), time.perf_counter() - started)
    pending: list[PendingTraces] = [traces]
    try:
        progress.stage("analyzing the trace")
        analysis = analyze_convs(load_profile(traces.files[0]))
        if quiet.is_contended(timing_busy):
            analysis.notes.append(f"The layout probe and the profiled steps ran while other processes kept "
                                  f"{timing_busy:.1f} cores busy: layer times, and the predictions made from them, "
                                  "may read high.")
        if options.compiled or workload.model_file_compile is not None:
            pending.append(_capture_compiled(workload, options, files, run_name, analysis, quiet, progress))
            analysis.compiled = compiled_view(load_profile(pending[-1].files[0]))
        results = run_rules(rules, analysis)
        outcomes = measure_findings(workload, results.findings, measuring, progress)
        report = build_report(analysis, _summary(workload, options, analysis), outcomes,
                              [path for p in pending for path in p.published_files],
                              files.logdir, results, rule_set)
        report.plan = build_plan(workload, outcomes, measuring, progress)
        report.busy_machine = busy_machine(report, quiet)
    except BaseException as exc:  # Ctrl-C included: the previous report stays, this run's traces are set aside
        for kept in filter(None, (p.set_aside() for p in pending)):
            exc.add_note(f"this run's traces were set aside in {kept}; the previous report in {files.out_dir} "
                         "is unchanged")
        raise
    for done in pending:
        done.publish()
    write_report(report, files)
    return report


def _capture_compiled(workload: Workload, options: ProfileOptions, files: ReportFiles, run_name: str,
                      analysis: ConvAnalysis, quiet: QuietPolicy, progress: Progress) -> PendingTraces:
    """Profile a compiled copy of the workload (the model file's own compile, else CD116's torch.compile) beside the
    eager run, under ``<run>-compiled``."""
    from convdoctor.analyzer.candidates.transforms import compiled
    from convdoctor.analyzer.capture.inductor_capture import COMPILED_RUN_SUFFIX, record_compiled
    from convdoctor.analyzer.capture.workload import time_limit
    from convdoctor.analyzer.trace.inductor_record import COMPILED_BY_CONVDOCTOR, COMPILED_BY_MODEL_FILE

    by_file = workload.model_file_compile
    if by_file is not None:
        analysis.notes.append("The model file returns a compiled model (torch.compile): the conv layers, findings and "
                              "measurements are those of its eager module (a copy); the compiled view shows what "
                              "compile does with it.")
    progress.stage(f"compiling a copy with torch.compile{' as the model file does' if by_file else ''} and "
                   f"capturing {options.steps} compiled steps")
    with time_limit(options.timeout_s, "compiling and profiling the compiled model"):
        return record_compiled(workload, by_file.apply if by_file else compiled,
                               COMPILED_BY_MODEL_FILE if by_file else COMPILED_BY_CONVDOCTOR, files.logdir,
                               run_name + COMPILED_RUN_SUFFIX, steps=options.steps,
                               eager_unprofiled_step_us=analysis.unprofiled_step_us, quiet=quiet)


def profile_job(path: Path, options: ProfileOptions, files: ReportFiles, progress: Progress) -> Report:
    """Profile a data-parallel job: capture every rank, analyze each, report rank 0 with the job's view."""
    from convdoctor.analyzer.capture.job_capture import capture_job
    from convdoctor.analyzer.capture.launch import JobSpec
    from convdoctor.analyzer.capture.workload import resolve_device
    from convdoctor.analyzer.measure.phase import measure_findings
    from convdoctor.analyzer.measure.plan import build_plan
    from convdoctor.analyzer.measure.trials import JobTrial

    if options.compiled:
        raise JobError("--compiled profiles one process: drop --nproc (or --compiled)")
    if options.mode != "train":
        raise JobError("--nproc needs --mode train: DistributedDataParallel communicates only in training "
                       "(the gradient allreduce); profile inference on one device, without --nproc")
    device = resolve_device(options.device).type
    backend = options.backend or ("nccl" if device == "cuda" else "gloo")
    spec = JobSpec(str(path), device, options.mode, options.batch_size, options.nproc, backend)
    run_name = f"{path.stem}-train-{device}-{options.nproc}ranks"
    progress.stage(f"launching {options.nproc} workers (torch elastic launcher, DistributedDataParallel, {backend}) "
                   f"to capture {options.steps} train steps on every rank")
    traces = capture_job(spec, files.logdir, run_name, options.steps)
    progress.stage(f"analyzing {len(traces)} rank traces")
    analyses = [analyze_convs(load_profile(trace)) for trace in traces]
    main = analyses[0]
    main.job = job_view(analyses)
    rule_set = load_rules()
    results = run_rules(select_rules(rule_set.rules, options.select, options.ignore), main)
    trial = JobTrial(spec, options.benchmark)
    measuring = options.measuring()
    outcomes = measure_findings(trial, results.findings, measuring, progress)
    summary = replace(trace_summary(main, traces[0]), model_file=str(path), steps=options.steps)
    report = build_report(main, summary, outcomes, traces, files.logdir, results, rule_set)
    report.plan = build_plan(trial, outcomes, measuring, progress)
    write_report(report, files)
    return report


def busy_machine(report: Report, quiet: QuietPolicy) -> BusyMachine | None:
    """The run's measurements that other processes' load left without a verdict, and what that load was."""
    taken = [o.measurement for o in report.outcomes if o.measurement is not None]
    taken += [m.measurement for o in report.outcomes for m in o.layer_measurements if m.measurement is not None]
    taken += [p.measurement for o in report.outcomes if o.throughput is not None for p in o.throughput.points]
    if report.plan is not None:
        taken += [report.plan.measurement] + [left.measurement for left in report.plan.left_out if left.measurement]
    unreliable = [m for m in taken if not m.reliable]
    if not unreliable:
        return None
    busiest = quiet.worst.describe() if quiet.worst is not None else unreliable[0].contention.busiest or "unknown"
    return BusyMachine(len(unreliable), len(taken), busiest, quiet.waited_s, quiet.wait_s)


def _summary(workload: Workload, options: ProfileOptions, analysis: ConvAnalysis) -> WorkloadSummary:
    from convdoctor.analyzer.capture.recording import environment

    env = environment(workload)
    return WorkloadSummary(
        model_file=workload.source,
        device=env.device,
        device_name=env.device_name,
        mode=env.mode,
        batch_size=env.batch_size,
        dtype=env.dtype,
        steps=options.steps,
        torch_version=env.torch_version,
        threads=env.threads,
        allocator=env.allocator,
        heap_kept=analysis.profile.environment.heap_kept is True,
    )
