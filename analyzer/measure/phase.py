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
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Measurement
from convdoctor.analyzer.measure.comparison import Comparison, TimeLimit, measure
from convdoctor.analyzer.measure.model_cost import ArchitectureDelta
from convdoctor.analyzer.measure.results import FindingOutcome, LayerMeasurement, Proposal, off_prediction
from convdoctor.analyzer.measure.trials import ArmTrial, CannotMeasure, LocalTrial, ProcessTrial, Trial, failure
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
    # The default mode's soft limit for the blocks the in-process candidates share, from the first one's start: past
    # it, each candidate ends as soon as it has its ``min_blocks`` (``Arm.wrap_up``). None: every candidate takes the
    # blocks its own rules ask for.
    wrap_up_after_s: float | None = None


def measure_findings(
    target: Workload | Trial, findings: list[Proposal], options: MeasuringOptions, progress: Progress
) -> list[FindingOutcome]:
    """Try each finding's candidate, the largest estimated saving first, until the time budget runs out.

    ``target`` is the workload (measured in this process) or a Trial (a whole job). Outcomes come back in the order
    of ``findings``. Without a time budget, the in-process candidates are measured together, as the arms of one
    comparison (``comparison.Comparison``): each block of rounds times the baseline and every candidate still
    measuring, so that they share the baseline's steps and every interval holds the machine's state over the whole
    phase. With a budget each candidate is finished before the next starts: the budget goes to the largest savings
    first.
    """
    workload = target if isinstance(target, Workload) else None
    trial = LocalTrial(target, options.benchmark, progress, options.quiet) if isinstance(target, Workload) else target
    shared = trial.comparison() if isinstance(trial, LocalTrial) and options.time_budget_s is None else None
    started = time.perf_counter()
    by_priority = sorted(range(len(findings)), key=lambda i: -(findings[i].estimated_saving or 0.0))
    outcomes: dict[int, FindingOutcome] = {}
    pending: dict[int, ArmTrial] = {}
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
            if shared is not None:
                added = _add_candidate(trial, shared, finding, progress, _candidate_limit(options, spent))
                if isinstance(added, FindingOutcome):
                    outcomes[index] = added
                else:
                    pending[index] = added
            else:
                outcomes[index] = _try_candidate(trial, workload, finding, options, progress,
                                                 _candidate_limit(options, spent))
    if shared is not None:
        outcomes.update(_finish_together(shared, pending, findings, workload, options, progress))
    for index, earlier in same_as.items():
        outcomes[index] = replace(outcomes[earlier], finding=findings[index],
                                  same_candidate_as=findings[earlier].rule_id)
    return [outcomes[i] for i in range(len(findings))]


def _add_candidate(trial: LocalTrial, shared: Comparison, finding: Proposal, progress: Progress,
                   limit: TimeLimit) -> ArmTrial | FindingOutcome:
    """A candidate made and its outputs compared with the baseline's, as an arm of ``shared``; or why it could not
    be measured."""
    progress.stage(f"measuring {finding.rule_id} {finding.rule_name}: baseline vs {finding.candidate.title}, "
                   "first step and outputs")
    try:
        return trial.add(shared, [finding.candidate], limit)
    except Exception as exc:
        return _failed(finding, exc)


def _finish_together(shared: Comparison, pending: dict[int, ArmTrial], findings: list[Proposal],
                     workload: Workload | None, options: MeasuringOptions, progress: Progress
                     ) -> dict[int, FindingOutcome]:
    """The blocks of the shared comparison until every candidate's are done, each wrapped up once the blocks have
    run ``wrap_up_after_s``; each candidate's outcome as soon as it is done. The progress line names the candidates
    in the next block and, from the blocks so far, about how long the rest take."""
    outcomes: dict[int, FindingOutcome] = {}
    variant_s: list[float] = []  # seconds per variant timed, block by block
    started = time.perf_counter()
    while pending:
        if options.wrap_up_after_s is not None and time.perf_counter() - started >= options.wrap_up_after_s:
            for arm_trial in pending.values():
                arm_trial.arm.wrap_up()
        for index, arm_trial in list(pending.items()):
            arm = arm_trial.arm
            if arm.failure is not None:
                outcomes[index] = _failed(findings[index], arm.failure, f" (in block {arm.failed_in_block})")
            elif not arm.blocks_left and not _looks_again(arm_trial, findings[index]):
                result, delta = arm_trial.result()
                outcomes[index] = _outcome(findings[index], result, delta, workload, options, progress)
            else:
                continue
            del pending[index]
        if not pending:
            break
        names = ", ".join(findings[index].rule_id for index in pending) + " against one baseline"
        if len(pending) == 1:
            (index,) = pending
            names = f"{findings[index].rule_id} {findings[index].rule_name}"
        block = max(len(arm_trial.arm.blocks) for arm_trial in pending.values()) + 1
        left = shared.blocks_left
        eta = (f"; about {left * (len(pending) + 1) * sum(variant_s) / len(variant_s):.0f} s left" if variant_s
               else "")
        progress.stage(f"measuring {names}: block {block} of {block + left - 1}{eta}")
        block_started = time.perf_counter()
        shared.run_block()
        variant_s.append((time.perf_counter() - block_started) / (len(pending) + 1))
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
            comparison = trial.comparison()
            arm_trial = trial.add(comparison, [candidate], limit)
            while arm_trial.arm.blocks_left or (arm_trial.arm.failure is None and _looks_again(arm_trial, finding)):
                comparison.run_block()
            result, delta = arm_trial.result()
        else:
            result, delta = trial([candidate], limit)
    except Exception as exc:
        return _failed(finding, exc)
    return _outcome(finding, result, delta, workload, options, progress)


def _looks_again(trial: ArmTrial, finding: Proposal) -> bool:
    """A finished arm whose interval stays over PREDICTION_FACTOR from the finding's prediction takes its second
    look (``Arm.second_look``, once); whether it did."""
    estimate = trial.arm.rounds().estimate()
    return off_prediction(estimate, finding.predicted_saving) and trial.arm.second_look()


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
