"""The pipeline as a Python API: load, capture, parse, attribute, run rules, measure candidates, report."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Protocol

import torch
from torch import nn

from convdoctor.analyzer.candidates.candidate import Candidate, LayerTrial, NumericsContract, combine
from convdoctor.analyzer.capture.launch import JobSpec, run_job
from convdoctor.analyzer.capture.recording import (
    check_fits,
    environment,
    record,
    settled_allocator,
)
from convdoctor.analyzer.capture.workload import (
    Inputs,
    Workload,
    describe_exception,
    load_workload,
    make_step,
    resolve_device,
    time_limit,
    workload_from,
)
from convdoctor.analyzer.conv.job_view import job_view
from convdoctor.analyzer.conv.layers import ConvAnalysis, analyze_convs
from convdoctor.analyzer.measure.batch_sweep import sweep_batch_sizes
from convdoctor.analyzer.measure.benchmark import (
    BenchmarkSettings,
    Comparison,
    Measurement,
    Verdict,
    measure,
)
from convdoctor.analyzer.measure.environment_trial import (
    WorkerError,
    measure_environment,
)
from convdoctor.analyzer.measure.job_tasks import CaptureTask, MeasureTask
from convdoctor.analyzer.measure.layout_probe import time_leaf_layouts
from convdoctor.analyzer.measure.model_cost import ArchitectureDelta, model_cost
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.errors import JobError, ModelTimeoutError
from convdoctor.pipeline import (
    Progress,
    ReportFiles,
    SilentProgress,
    build_report,
    prepare_out_dir,
    write_report,
)
from convdoctor.reports.report import (
    FindingOutcome,
    LayerMeasurement,
    LeftOut,
    Plan,
    Report,
    WorkloadSummary,
    trace_summary,
)
from convdoctor.rules.base import Finding, Probe, wanted_probes
from convdoctor.rules.registry import load_rules, run_rules, select_rules


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
    timeout_s: float | None = 300.0  # loading the model file, its first step, the capture, one candidate's trial
    nproc: int = 1  # above 1: a data-parallel job of this many workers (DDP under PyTorch's elastic launcher)
    backend: str | None = None  # the job's process-group backend; None: nccl on CUDA, gloo on the CPU
    select: tuple[str, ...] = ()  # rule ids/prefixes/names to run (all when empty)
    ignore: tuple[str, ...] = ()
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)


def profile_file(
    path: str | Path, options: ProfileOptions = ProfileOptions(), progress: Progress = SilentProgress()
) -> tuple[Report, ReportFiles]:
    """Profile the model a model file defines; write report.html, report.json and traces to the out dir."""
    path = Path(path)
    out_dir = options.out_dir or Path("convdoctor-out") / path.stem
    files = prepare_out_dir(out_dir)
    if options.nproc > 1:
        return _run_job(path, options, files, progress), files
    progress.stage(f"loading {path}")
    with time_limit(options.timeout_s, f"loading {path}"):
        workload = load_workload(path, device=options.device, mode=options.mode, batch_size=options.batch_size)
    return _run(workload, options, files, progress), files


def profile(
    model: nn.Module, inputs: Inputs, options: ProfileOptions = ProfileOptions(),
    progress: Progress = SilentProgress(),
) -> tuple[Report, ReportFiles]:
    """Profile a model object on example inputs; neither is modified."""
    if options.nproc > 1:
        raise JobError("nproc above 1 needs a model file that every worker imports: use profile_file()")
    out_dir = options.out_dir or Path("convdoctor-out") / type(model).__name__
    files = prepare_out_dir(out_dir)
    workload = workload_from(model, inputs, device=options.device, mode=options.mode,
                             source=f"{type(model).__module__}.{type(model).__name__}")
    return _run(workload, options, files, progress), files


def _run(workload: Workload, options: ProfileOptions, files: ReportFiles, progress: Progress) -> Report:
    progress.stage("checking that the inputs fit the model")
    with time_limit(options.timeout_s, "the model's first step"):
        check_fits(workload)
    with time_limit(options.timeout_s, "the model's first steps"):
        allocator_record = settled_allocator(make_step(workload.copy()))  # before anything is timed
    run_name = f"{Path(workload.source).stem}-{workload.mode.value}-{workload.device.type}"
    rule_set = load_rules()
    rules = select_rules(rule_set.rules, options.select, options.ignore)
    layout_probe = None
    if options.measure and Probe.LAYOUT in wanted_probes(rules):  # a probe is a measurement: --no-measure skips it
        progress.stage("timing each layer alone, in its layout and in channels_last")
        with time_limit(options.timeout_s, "the layout probe"):
            layout_probe = time_leaf_layouts(workload)
    progress.stage(f"capturing {options.steps} {workload.mode.value} steps under torch.profiler")
    with time_limit(options.timeout_s, "the profiled steps"):
        traces = record(workload, files.logdir, run_name, steps=options.steps, layout_probe=layout_probe,
                        allocator_record=allocator_record)
    try:
        progress.stage("analyzing the trace")
        analysis = analyze_convs(load_profile(traces.files[0]))
        results = run_rules(rules, analysis)
        outcomes = measure_findings(workload, results.findings, options, progress)
        report = build_report(analysis, _summary(workload, options, analysis), outcomes, traces.published_files,
                              files.logdir, results, rule_set)
        report.plan = build_plan(workload, outcomes, options, progress)
    except BaseException as exc:  # Ctrl-C included: the previous report stays, this run's traces are set aside
        kept = traces.set_aside()
        if kept is not None:
            exc.add_note(f"this run's traces were set aside in {kept}; the previous report in {files.out_dir} "
                         "is unchanged")
        raise
    traces.publish()
    write_report(report, files)
    return report


class Trial(Protocol):
    """Measures the baseline against candidates applied together: in this process, or as a whole job."""

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        ...


TimeLimit = tuple[float | None, str]  # seconds (None: no limit), and which option set them
CANDIDATE_TIMEOUT_ADVICE = "it was stopped and the run went on; raise --timeout or --time-budget to let it finish"


class LocalTrial:
    """Baseline against candidate in this process (``benchmark.measure``), stopped when its time limit passes."""

    def __init__(self, workload: Workload, options: ProfileOptions, progress: Progress) -> None:
        self.workload, self.options, self.progress = workload, options, progress

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        pending = self.start(candidates, limit)
        while pending.comparison.blocks_left:
            pending.run_block()
        return pending.result()

    def start(self, candidates: list[Candidate], limit: TimeLimit) -> PendingTrial:
        """The candidates applied together, their outputs compared and the first block of rounds timed."""
        candidate = candidates[0] if len(candidates) == 1 else combine(candidates)
        pending = PendingTrial(self.workload, candidate, limit)
        with pending.limit():
            trial = candidate.transform(self.workload.copy())
            pending.comparison = Comparison(self.workload, trial, self.options.benchmark, self.progress.rounds)
            pending.comparison.run_block()
        return pending


class PendingTrial:
    """A candidate's in-process trial between its blocks of rounds: what is left of its time limit goes with it."""

    comparison: Comparison

    def __init__(self, workload: Workload, candidate: Candidate, limit: TimeLimit) -> None:
        self.workload, self.candidate = workload, candidate
        self.seconds_left, limit_name = limit
        self.what = (f"this trial ({limit_name})" if self.seconds_left is None
                     else f"this trial ({limit_name}: {self.seconds_left:g} s in all)")

    @contextlib.contextmanager
    def limit(self) -> Iterator[None]:
        """The trial's time limit, less what its earlier blocks took; the device's cache emptied when it fails."""
        started = time.perf_counter()
        try:
            with time_limit(self.seconds_left, self.what, advice=CANDIDATE_TIMEOUT_ADVICE):
                yield
        except Exception:
            if self.workload.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        finally:
            if self.seconds_left is not None:
                self.seconds_left = max(self.seconds_left - (time.perf_counter() - started), 1e-3)

    def run_block(self) -> None:
        with self.limit():
            self.comparison.run_block()

    def result(self) -> tuple[Measurement, ArchitectureDelta | None]:
        measurement = self.comparison.measurement()
        if self.candidate.numerics is NumericsContract.ARCHITECTURE:
            return measurement, ArchitectureDelta(before=model_cost(self.workload),
                                                  after=model_cost(self.comparison.candidate))
        return measurement, None


def measure_findings(
    target: Workload | Trial, findings: list[Finding], options: ProfileOptions, progress: Progress
) -> list[FindingOutcome]:
    """Try each finding's candidate, the largest estimated saving first, until the time budget runs out.

    ``target`` is the workload (measured in this process) or a Trial (a whole job). Outcomes come back in the order
    of ``findings``. Without a time budget, the in-process candidates' blocks of rounds are spread over the phase:
    each candidate's first block in priority order, then the second block of each, and so on, so that every
    interval holds the machine's state over the whole phase (``benchmark.Comparison``). With a budget each
    candidate is finished before the next starts: the budget goes to the largest savings first.
    """
    workload = target if isinstance(target, Workload) else None
    trial = LocalTrial(target, options, progress) if isinstance(target, Workload) else target
    spread = isinstance(trial, LocalTrial) and options.time_budget_s is None
    started = time.perf_counter()
    by_priority = sorted(range(len(findings)), key=lambda i: -(findings[i].estimated_saving or 0.0))
    outcomes: dict[int, FindingOutcome] = {}
    pending: dict[int, PendingTrial] = {}
    first_with: dict[int, int] = {}  # a transform's id: the finding that measures it (rules may share a transform)
    same_as: dict[int, int] = {}
    for index in by_priority:
        finding = findings[index]
        spent = time.perf_counter() - started
        left_s = None if options.time_budget_s is None else options.time_budget_s - spent
        earlier = first_with.get(id(finding.candidate.transform)) if finding.candidate else None
        if earlier is not None:
            same_as[index] = earlier
        elif finding.larger_batches is not None and workload is None:
            outcomes[index] = FindingOutcome(finding, not_measured="larger batches are not measured under --nproc")
        elif finding.larger_batches is not None and options.measure and (left_s is None or left_s > 0):
            outcomes[index] = _try_larger_batches(workload, finding, options, progress, left_s)
        elif finding.candidate is None and finding.larger_batches is None:
            outcomes[index] = FindingOutcome(finding, not_measured="this finding has no automatic candidate")
        elif not options.measure:
            outcomes[index] = FindingOutcome(finding, not_measured="measuring was turned off (--no-measure)")
        elif left_s is not None and left_s <= 0:
            outcomes[index] = FindingOutcome(
                finding, not_measured=f"the measuring time budget ({options.time_budget_s:g} s) ran out before "
                                      "this candidate; raise --time-budget to measure it")
        elif finding.candidate.process_environment is not None:
            outcomes[index] = _try_candidate(ProcessTrial(workload, options, progress), None, finding, options,
                                             progress, _candidate_limit(options, spent))
        else:
            first_with[id(finding.candidate.transform)] = index
            if spread:
                started_trial = _start_candidate(trial, finding, progress, _candidate_limit(options, spent))
                if isinstance(started_trial, FindingOutcome):
                    outcomes[index] = started_trial
                else:
                    pending[index] = started_trial
            else:
                outcomes[index] = _try_candidate(trial, workload, finding, options, progress,
                                                 _candidate_limit(options, spent))
    outcomes.update(_finish_spread(pending, findings, workload, options, progress))
    for index, earlier in same_as.items():
        outcomes[index] = replace(outcomes[earlier], finding=findings[index],
                                  same_candidate_as=findings[earlier].rule_id)
    return [outcomes[i] for i in range(len(findings))]


def _start_candidate(trial: LocalTrial, finding: Finding, progress: Progress,
                     limit: TimeLimit) -> PendingTrial | FindingOutcome:
    """A candidate's numerics and first block of rounds, or why it could not be measured."""
    progress.stage(f"measuring {finding.rule_id} {finding.rule_name}: baseline vs {finding.candidate.title}, "
                   "first block")
    try:
        return trial.start([finding.candidate], limit)
    except Exception as exc:
        return _failed(finding, exc)


def _finish_spread(pending: dict[int, PendingTrial], findings: list[Finding], workload: Workload | None,
                   options: ProfileOptions, progress: Progress) -> dict[int, FindingOutcome]:
    """The later blocks of every started candidate, one block of each in turn; then each one's outcome."""
    outcomes: dict[int, FindingOutcome] = {}
    while pending:
        for index, trial in list(pending.items()):
            if not trial.comparison.blocks_left:
                result, delta = trial.result()
                outcomes[index] = _outcome(findings[index], result, delta, workload, options, progress)
                del pending[index]
                continue
            block = len(trial.comparison.rounds().blocks) + 1
            progress.stage(f"measuring {findings[index].rule_id} {findings[index].rule_name}: block {block} of "
                           f"{block + trial.comparison.blocks_left - 1}")
            try:
                trial.run_block()
            except Exception as exc:
                outcomes[index] = _failed(findings[index], exc, f" (in block {block})")
                del pending[index]
    return outcomes


def _candidate_limit(options: ProfileOptions, spent_s: float) -> TimeLimit:
    """How long the next candidate may take: --timeout, or what is left of --time-budget if that is less."""
    if options.time_budget_s is not None:
        left = options.time_budget_s - spent_s
        if options.timeout_s is None or left < options.timeout_s:
            return left, "the rest of --time-budget"
    return options.timeout_s, "--timeout"


def build_plan(
    target: Workload | Trial, outcomes: list[FindingOutcome], options: ProfileOptions, progress: Progress
) -> Plan | None:
    """The accepted candidates combined one by one, each kept only when the plan measures faster with it.

    Accepted: measured faster, numerics within tolerance, and not an architecture change (no retraining).
    Speedups do not multiply, and two fixes can undo each other (torch.compile on top of channels_last in training
    on this CPU): starting from the fastest alone, each further accepted candidate, by its own speedup, is added and
    the combination measured against the baseline; it stays when that is faster than the plan so far and within the
    combined tolerance, and is left out, with the measurement that showed it, otherwise.
    """
    trial = LocalTrial(target, options, progress) if isinstance(target, Workload) else target
    accepted = [o for o in outcomes if o.measurement is not None and o.numerics_ok and o.same_candidate_as is None
                and o.measurement.estimate.verdict is Verdict.FASTER and o.architecture is None
                and o.finding.candidate.process_environment is None]  # process settings cannot combine in-process
    if not accepted:
        return None
    first, *rest = sorted(accepted, key=lambda o: -o.measurement.estimate.speedup)
    plan = Plan(steps=[first], measurement=first.measurement, tolerance=first.finding.candidate.tolerance)
    for outcome in rest:
        candidates = [step.finding.candidate for step in [*plan.steps, outcome]]
        combined = combine(candidates)
        progress.stage(f"measuring the plan with {outcome.finding.rule_id}: {combined.title}")
        try:
            result, _ = trial(candidates, (options.timeout_s, "--timeout"))
        except Exception as exc:  # the combination may fail where each step alone did not
            plan.left_out.append(LeftOut(outcome, None, f"the plan with it failed: {_failure(exc)}"))
            continue
        if not result.numerics.within(combined.tolerance):
            plan.left_out.append(LeftOut(outcome, result, f"the plan with it is beyond the combined tolerance "
                                                          f"{combined.tolerance:g}"))
        elif result.estimate.speedup <= plan.measurement.estimate.speedup:
            plan.left_out.append(LeftOut(outcome, result, f"the plan with it measured {result.estimate.speedup:.2f}×, "
                                                          f"without it {plan.measurement.estimate.speedup:.2f}×"))
        else:
            plan = replace(plan, steps=[*plan.steps, outcome], measurement=result, tolerance=combined.tolerance)
    return plan


def _try_candidate(
    trial: Trial, workload: Workload | None, finding: Finding, options: ProfileOptions, progress: Progress,
    limit: TimeLimit,
) -> FindingOutcome:
    """Measure one finding's candidate; ``workload`` (None in a job) also lets it measure single layers."""
    candidate = finding.candidate
    assert candidate is not None
    progress.stage(f"measuring {finding.rule_id} {finding.rule_name}: baseline vs {candidate.title}")
    try:
        result, delta = trial([candidate], limit)
    except Exception as exc:
        return _failed(finding, exc)
    return _outcome(finding, result, delta, workload, options, progress)


def _failed(finding: Finding, exc: Exception, where: str = "") -> FindingOutcome:
    """A candidate that timed out, cannot be measured here, or failed in any way (OOM included): the run goes on."""
    if isinstance(exc, (ModelTimeoutError, CannotMeasure)):
        return FindingOutcome(finding, not_measured=f"{exc}{where}")
    return FindingOutcome(finding, not_measured=f"the candidate failed{where}: {_failure(exc)}")


def _outcome(finding: Finding, result: Measurement, delta: ArchitectureDelta | None, workload: Workload | None,
             options: ProfileOptions, progress: Progress) -> FindingOutcome:
    """A measured candidate's outcome: its architecture delta, or its numerics against its tolerance and the
    single-layer trials it asks for."""
    if delta is not None:
        return FindingOutcome(finding, measurement=result, architecture=delta)
    candidate = finding.candidate
    ok = result.numerics.within(candidate.tolerance)
    layers = [_try_layer(workload, layer, options, progress) for layer in candidate.layer_trials] if workload else []
    return FindingOutcome(finding, measurement=result, numerics_ok=ok, layer_measurements=layers)


def _failure(exc: Exception) -> str:
    """A failed trial in one line: a job's error line is already one."""
    return str(exc) if isinstance(exc, (JobError, CannotMeasure, WorkerError)) else describe_exception(exc)


class CannotMeasure(Exception):
    """A candidate that a trial cannot measure, and why, in one line (a transform that does not pickle for a
    job's workers; a process setting without a model file for its worker processes)."""


def _try_layer(workload: Workload, trial: LayerTrial, options: ProfileOptions, progress: Progress) -> LayerMeasurement:
    """The trial's layer alone on random inputs of its recorded shape, before and after the trial's transform."""
    progress.stage(f"measuring layer {trial.layer} alone: input {list(trial.input_shape)}")
    try:
        module = workload.model.get_submodule(trial.layer)
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        inputs = torch.randn(trial.input_shape, dtype=dtype, device=workload.device)
        alone = replace(workload, model=module, inputs=inputs, source=f"{workload.source}:{trial.layer}",
                        input_factory=None)
        result = measure(alone, trial.transform(alone.copy()), options.benchmark, progress=progress.rounds)
    except Exception as exc:  # the layer alone may fail where the model did not; the run goes on
        return LayerMeasurement(trial.layer, trial.input_shape, None,
                                not_measured=f"the layer trial failed: {describe_exception(exc)}")
    return LayerMeasurement(trial.layer, trial.input_shape, result)


def _try_larger_batches(
    workload: Workload, finding: Finding, options: ProfileOptions, progress: Progress, left_s: float | None
) -> FindingOutcome:
    """Samples/s at larger batches against the workload's own batch (a workload change: never a plan step)."""
    proposal = finding.larger_batches
    assert proposal is not None
    if workload.input_factory is None:
        return FindingOutcome(finding, not_measured=(
            "the model file gives no get_inputs(batch_size), so convdoctor cannot build larger batches; define "
            "get_inputs(batch_size=...) in the model file to measure this"))
    budget = proposal.budget_s if left_s is None else min(proposal.budget_s, left_s)
    try:
        sweep = sweep_batch_sizes(
            workload, proposal.factors, options.benchmark, budget, progress.rounds,
            before_each=lambda batch: progress.stage(
                f"measuring {finding.rule_id} {finding.rule_name}: samples/s at batch {batch} vs "
                f"{workload.batch_size}"))
    except Exception as exc:  # the user's get_inputs or a larger batch may fail in any way; the run goes on
        if workload.device.type == "cuda":
            torch.cuda.empty_cache()
        return FindingOutcome(finding, not_measured=f"the larger batch failed: {describe_exception(exc)}")
    if not sweep.points:
        return FindingOutcome(finding, not_measured=sweep.stopped)
    return FindingOutcome(finding, throughput=sweep)


class ProcessTrial:
    """Baseline against a process setting (``Candidate.process_environment``): worker processes started from
    the model file, with and without it (a fresh pair per block), timed in alternating steps
    (``environment_trial.measure_environment``)."""

    def __init__(self, workload: Workload | None, options: ProfileOptions, progress: Progress) -> None:
        self.workload, self.options, self.progress = workload, options, progress

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        (candidate,) = candidates  # process settings are never combined: the plan runs in one process
        assert candidate.process_environment is not None
        if self.workload is None:
            raise CannotMeasure("process settings are not measured under --nproc")
        if not os.path.isfile(self.workload.source):
            raise CannotMeasure("process settings are measured on a model file (convdoctor profile MODEL_PY): "
                                "each variant starts its own process")
        seconds, limit_name = limit
        with time_limit(seconds, f"this trial ({limit_name})", advice=CANDIDATE_TIMEOUT_ADVICE):
            return measure_environment(self.workload, candidate.process_environment, self.options.benchmark,
                                       self.progress.rounds), None


class JobTrial:
    """Baseline against candidates as a whole data-parallel job: one launch per trial (``job_tasks.measure_job``)."""

    def __init__(self, spec: JobSpec, options: ProfileOptions) -> None:
        self.spec, self.options = spec, options

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        """``limit`` is not applied: a job trial runs a fixed warm-up and number of rounds."""
        try:
            pickle.dumps(candidates)
        except Exception as exc:  # closures and local classes do not pickle
            raise CannotMeasure("not measured under --nproc: its transform cannot be sent to the job's workers "
                              "(it does not pickle); profile without --nproc to measure it") from exc
        return run_job(self.spec, MeasureTask(tuple(candidates), self.options.benchmark))[0]


def _run_job(path: Path, options: ProfileOptions, files: ReportFiles, progress: Progress) -> Report:
    """Profile a data-parallel job: capture every rank, analyze each, report rank 0 with the job's view."""
    if options.mode != "train":
        raise JobError("--nproc needs --mode train: DistributedDataParallel communicates only in training "
                       "(the gradient allreduce); profile inference on one device, without --nproc")
    device = resolve_device(options.device).type
    backend = options.backend or ("nccl" if device == "cuda" else "gloo")
    spec = JobSpec(str(path), device, options.mode, options.batch_size, options.nproc, backend)
    run_name = f"{path.stem}-train-{device}-{options.nproc}ranks"
    progress.stage(f"launching {options.nproc} workers (torch elastic launcher, DistributedDataParallel, {backend}) "
                   f"to capture {options.steps} train steps on every rank")
    traces = _capture_job(spec, files.logdir, run_name, options.steps)
    progress.stage(f"analyzing {len(traces)} rank traces")
    analyses = [analyze_convs(load_profile(trace)) for trace in traces]
    main = analyses[0]
    main.job = job_view(analyses)
    rule_set = load_rules()
    results = run_rules(select_rules(rule_set.rules, options.select, options.ignore), main)
    trial = JobTrial(spec, options)
    outcomes = measure_findings(trial, results.findings, options, progress)
    summary = replace(trace_summary(main, traces[0]), model_file=str(path), steps=options.steps)
    report = build_report(main, summary, outcomes, traces, files.logdir, results, rule_set)
    report.plan = build_plan(trial, outcomes, options, progress)
    write_report(report, files)
    return report


def _capture_job(spec: JobSpec, logdir: Path, run_name: str, steps: int) -> list[Path]:
    """Every rank's traces in ``logdir/run_name``, rank order; a failed job leaves the previous traces as they were."""
    logdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".job-", dir=logdir))
    try:
        per_rank = run_job(spec, CaptureTask(str(scratch), run_name, steps))
        target = logdir / run_name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        traces = []
        for written in per_rank:
            for trace in map(Path, written):
                traces.append(trace.rename(target / trace.name))
        return traces
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _summary(workload: Workload, options: ProfileOptions, analysis: ConvAnalysis) -> WorkloadSummary:
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
        allocator=env["allocator"],
        heap_kept=analysis.profile.environment.get("heap_kept") is True,
    )
