"""The measuring phase: each finding's candidate tried against the baseline, the largest estimated saving first,
within the time budget; single-layer trials and larger-batch sweeps where a finding asks for them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from convdoctor.analyzer.candidates.candidate import LayerTrial
from convdoctor.analyzer.capture.contention import QuietPolicy
from convdoctor.analyzer.capture.workload import Workload, describe_exception
from convdoctor.analyzer.measure.batch_sweep import sweep_batch_sizes
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Measurement, measure
from convdoctor.analyzer.measure.model_cost import ArchitectureDelta
from convdoctor.analyzer.measure.results import FindingOutcome, LayerMeasurement, Proposal, off_prediction
from convdoctor.analyzer.measure.trials import (
    CannotMeasure,
    LocalTrial,
    PendingTrial,
    ProcessTrial,
    TimeLimit,
    Trial,
    failure,
)
from convdoctor.errors import ModelTimeoutError
from convdoctor.progress import Progress


@dataclass(frozen=True)
class MeasuringOptions:
    """What the measuring phase is told: whether to measure, its budget and limits, the harness's settings."""

    enabled: bool = True
    time_budget_s: float | None = None  # for the whole measuring phase; None: measure every candidate
    timeout_s: float | None = 300.0  # one candidate's trial
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    quiet: QuietPolicy | None = None  # the run's rule for busy machines; None: never wait, mark contention
    # The default mode's soft limit for the candidates' blocks: past it, each comparison ends as soon as it has its
    # ``min_blocks`` (``Comparison.wrap_up``). None: every comparison takes the blocks its own rules ask for.
    wrap_up_after_s: float | None = None


def measure_findings(
    target: Workload | Trial, findings: list[Proposal], options: MeasuringOptions, progress: Progress
) -> list[FindingOutcome]:
    """Try each finding's candidate, the largest estimated saving first, until the time budget runs out.

    ``target`` is the workload (measured in this process) or a Trial (a whole job). Outcomes come back in the order
    of ``findings``. Without a time budget, the in-process candidates' blocks of rounds are spread over the phase:
    each candidate's first block in priority order, then the second block of each, and so on, so that every
    interval holds the machine's state over the whole phase (``benchmark.Comparison``). With a budget each
    candidate is finished before the next starts: the budget goes to the largest savings first.
    """
    workload = target if isinstance(target, Workload) else None
    trial = LocalTrial(target, options.benchmark, progress, options.quiet) if isinstance(target, Workload) else target
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
        elif finding.larger_batches is not None and options.enabled and (left_s is None or left_s > 0):
            outcomes[index] = _try_larger_batches(workload, finding, options, progress, left_s)
        elif finding.candidate is None and finding.larger_batches is None:
            outcomes[index] = FindingOutcome(finding, not_measured="this finding has no automatic candidate")
        elif not options.enabled:
            outcomes[index] = FindingOutcome(finding, not_measured="measuring was turned off (--no-measure)")
        elif left_s is not None and left_s <= 0:
            outcomes[index] = FindingOutcome(
                finding, not_measured=f"the measuring time budget ({options.time_budget_s:g} s) ran out before "
                                      "this candidate; raise --time-budget to measure it")
        elif finding.candidate.process_environment is not None:
            process_trial = ProcessTrial(workload, options.benchmark, progress, options.quiet)
            outcomes[index] = _try_candidate(process_trial, None, finding, options, progress,
                                             _candidate_limit(options, spent))
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
    outcomes.update(_finish_spread(pending, findings, workload, options, progress, started))
    for index, earlier in same_as.items():
        outcomes[index] = replace(outcomes[earlier], finding=findings[index],
                                  same_candidate_as=findings[earlier].rule_id)
    return [outcomes[i] for i in range(len(findings))]


def _start_candidate(trial: LocalTrial, finding: Proposal, progress: Progress,
                     limit: TimeLimit) -> PendingTrial | FindingOutcome:
    """A candidate's numerics and first block of rounds, or why it could not be measured."""
    progress.stage(f"measuring {finding.rule_id} {finding.rule_name}: baseline vs {finding.candidate.title}, "
                   "first block")
    try:
        return trial.start([finding.candidate], limit)
    except Exception as exc:
        return _failed(finding, exc)


def _finish_spread(pending: dict[int, PendingTrial], findings: list[Proposal], workload: Workload | None,
                   options: MeasuringOptions, progress: Progress, started: float) -> dict[int, FindingOutcome]:
    """The later blocks of every started candidate, one block of each in turn, each wrapped up once the phase
    (begun at ``started``) has run ``wrap_up_after_s``; then each one's outcome. The progress line gives the blocks
    left and, from the blocks so far, about how long they take."""
    outcomes: dict[int, FindingOutcome] = {}
    block_s: list[float] = []
    while pending:
        if options.wrap_up_after_s is not None and time.perf_counter() - started >= options.wrap_up_after_s:
            for trial in pending.values():
                trial.comparison.wrap_up()
        for index, trial in list(pending.items()):
            if not trial.comparison.blocks_left and not _looks_again(trial, findings[index]):
                result, delta = trial.result()
                outcomes[index] = _outcome(findings[index], result, delta, workload, options, progress)
                del pending[index]
                continue
            block = len(trial.comparison.rounds().blocks) + 1
            left = sum(other.comparison.blocks_left for other in pending.values())
            eta = f"; {left} blocks left, about {left * sum(block_s) / len(block_s):.0f} s" if block_s else ""
            progress.stage(f"measuring {findings[index].rule_id} {findings[index].rule_name}: block {block} of "
                           f"{block + trial.comparison.blocks_left - 1}{eta}")
            started = time.perf_counter()
            try:
                trial.run_block()
                block_s.append(time.perf_counter() - started)
            except Exception as exc:
                outcomes[index] = _failed(findings[index], exc, f" (in block {block})")
                del pending[index]
    return outcomes


def _candidate_limit(options: MeasuringOptions, spent_s: float) -> TimeLimit:
    """How long the next candidate may take: --timeout, or what is left of --time-budget if that is less."""
    if options.time_budget_s is not None:
        left = options.time_budget_s - spent_s
        if options.timeout_s is None or left < options.timeout_s:
            return left, "the rest of --time-budget"
    return options.timeout_s, "--timeout"


def _try_candidate(
    trial: Trial, workload: Workload | None, finding: Proposal, options: MeasuringOptions, progress: Progress,
    limit: TimeLimit,
) -> FindingOutcome:
    """Measure one finding's candidate; ``workload`` (None in a job) also lets it measure single layers."""
    candidate = finding.candidate
    assert candidate is not None
    progress.stage(f"measuring {finding.rule_id} {finding.rule_name}: baseline vs {candidate.title}")
    try:
        if isinstance(trial, LocalTrial):
            pending = trial.start([candidate], limit)
            while pending.comparison.blocks_left or _looks_again(pending, finding):
                pending.run_block()
            result, delta = pending.result()
        else:
            result, delta = trial([candidate], limit)
    except Exception as exc:
        return _failed(finding, exc)
    return _outcome(finding, result, delta, workload, options, progress)


def _looks_again(trial: PendingTrial, finding: Proposal) -> bool:
    """A finished comparison whose interval stays over PREDICTION_FACTOR from the finding's prediction takes its
    second look (``Comparison.second_look``, once); whether it did."""
    estimate = trial.comparison.rounds().estimate()
    return off_prediction(estimate, finding.predicted_saving) and trial.comparison.second_look()


def _failed(finding: Proposal, exc: Exception, where: str = "") -> FindingOutcome:
    """A candidate that timed out, cannot be measured here, or failed in any way (OOM included): the run goes on."""
    if isinstance(exc, (ModelTimeoutError, CannotMeasure)):
        return FindingOutcome(finding, not_measured=f"{exc}{where}")
    return FindingOutcome(finding, not_measured=f"the candidate failed{where}: {failure(exc)}")


def _outcome(finding: Proposal, result: Measurement, delta: ArchitectureDelta | None, workload: Workload | None,
             options: MeasuringOptions, progress: Progress) -> FindingOutcome:
    """A measured candidate's outcome: its architecture delta, or its numerics against its tolerance and the
    single-layer trials it asks for."""
    if delta is not None:
        return FindingOutcome(finding, measurement=result, architecture=delta)
    candidate = finding.candidate
    ok = result.numerics.within(candidate.tolerance)
    layers = ([_try_layer(workload, layer, candidate.tolerance, options, progress) for layer in candidate.layer_trials]
              if workload else [])
    return FindingOutcome(finding, measurement=result, numerics_ok=ok, layer_measurements=layers,
                          off_prediction=off_prediction(result.estimate, finding.predicted_saving))


def _try_layer(workload: Workload, trial: LayerTrial, tolerance: float, options: MeasuringOptions,
               progress: Progress) -> LayerMeasurement:
    """The trial's layer alone on random inputs of its recorded shape, before and after the trial's transform."""
    progress.stage(f"measuring layer {trial.layer} alone: input {list(trial.input_shape)}")
    try:
        module = workload.model.get_submodule(trial.layer)
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        inputs = torch.randn(trial.input_shape, dtype=dtype, device=workload.device)
        alone = replace(workload, model=module, inputs=inputs, source=f"{workload.source}:{trial.layer}",
                        input_factory=None)
        result = measure(alone, trial.transform(alone.copy()), options.benchmark, progress.rounds, options.quiet)
    except Exception as exc:  # the layer alone may fail where the model did not; the run goes on
        return LayerMeasurement(trial.layer, trial.input_shape, None,
                                not_measured=f"the layer trial failed: {describe_exception(exc)}")
    return LayerMeasurement(trial.layer, trial.input_shape, result, numerics_ok=result.numerics.within(tolerance))


def _try_larger_batches(
    workload: Workload, finding: Proposal, options: MeasuringOptions, progress: Progress, left_s: float | None
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
                f"{workload.batch_size}"), quiet=options.quiet)
    except Exception as exc:  # the user's get_inputs or a larger batch may fail in any way; the run goes on
        if workload.device.type == "cuda":
            torch.cuda.empty_cache()
        return FindingOutcome(finding, not_measured=f"the larger batch failed: {describe_exception(exc)}")
    if not sweep.points:
        return FindingOutcome(finding, not_measured=sweep.stopped)
    return FindingOutcome(finding, throughput=sweep)
