"""The plan: the accepted fixes combined one by one, each kept only when the plan measures faster with it."""

from __future__ import annotations

from dataclasses import replace

from convdoctor.analyzer.candidates.candidate import PlanStage, combine
from convdoctor.analyzer.capture.workload import Workload
from convdoctor.analyzer.measure.benchmark import Verdict
from convdoctor.analyzer.measure.phase import MeasuringOptions
from convdoctor.analyzer.measure.results import FindingOutcome, LeftOut, Plan
from convdoctor.analyzer.measure.trials import LocalTrial, Trial, failure
from convdoctor.progress import Progress


def build_plan(
    target: Workload | Trial, outcomes: list[FindingOutcome], options: MeasuringOptions, progress: Progress
) -> Plan | None:
    """The accepted candidates combined one by one, each kept only when the plan measures faster with it.

    Accepted: measured faster, numerics within tolerance, and not an architecture change (no retraining).
    Speedups do not multiply, and two fixes can undo each other (torch.compile on top of channels_last in training
    on this CPU): starting from the fastest alone, each further accepted candidate, by its own speedup
    (``_plan_order``), is added and the combination measured against the baseline; it stays when that is faster
    than the plan so far and within the combined tolerance, and is left out, with the measurement that showed it,
    otherwise. A fix that a step already does (``Candidate.covers``), and a second compile, are left out
    unmeasured, with the reason.
    """
    trial = LocalTrial(target, options.benchmark, progress, options.quiet) if isinstance(target, Workload) else target
    accepted = [o for o in outcomes if o.measurement is not None and o.numerics_ok and o.same_candidate_as is None
                and o.measurement.estimate.verdict is Verdict.FASTER and o.architecture is None
                and o.finding.candidate.process_environment is None]  # process settings cannot combine in-process
    if not accepted:
        return None
    first, *rest = _plan_order(accepted)
    plan = Plan(steps=[first], measurement=first.measurement, tolerance=first.finding.candidate.tolerance)
    for outcome in rest:
        covered = _covered_by(plan, outcome) or _compiled_already(plan, outcome)
        if covered is not None:
            plan.left_out.append(LeftOut(outcome, None, covered))
            continue
        candidates = [step.finding.candidate for step in [*plan.steps, outcome]]
        combined = combine(candidates)
        progress.stage(f"measuring the plan with {outcome.finding.rule_id}: {combined.title}")
        try:
            result, _ = trial(candidates, (options.timeout_s, "--timeout"))
        except Exception as exc:  # the combination may fail where each step alone did not
            plan.left_out.append(LeftOut(outcome, None, f"the plan with it failed: {failure(exc)}"))
            continue
        if not result.reliable:
            plan.left_out.append(LeftOut(outcome, result, "the plan with it was measured while other processes kept "
                                                          "the cores busy: no verdict"))
        elif not result.numerics.within(combined.tolerance):
            plan.left_out.append(LeftOut(outcome, result, f"the plan with it is beyond the combined tolerance "
                                                          f"{combined.tolerance:g}"))
        elif result.estimate.speedup <= plan.measurement.estimate.speedup:
            plan.left_out.append(LeftOut(outcome, result, f"the plan with it measured {result.estimate.speedup:.2f}×, "
                                                          f"without it {plan.measurement.estimate.speedup:.2f}×"))
        else:
            plan = replace(plan, steps=[*plan.steps, outcome], measurement=result, tolerance=combined.tolerance)
    return plan


def _plan_order(accepted: list[FindingOutcome]) -> list[FindingOutcome]:
    """The accepted candidates, the fastest alone first; but a candidate that does what another does
    (``Candidate.covers``) goes before it unless that other measured faster beyond doubt (its interval wholly above
    the covering one's): which of the two measured faster alone is otherwise the noise of two intervals that
    overlap, and the plan keeps the one that does both."""
    order = sorted(accepted, key=lambda o: -o.measurement.estimate.speedup)
    for covering in list(order):
        covered = {rule_id for rule_id, _ in covering.finding.candidate.covers}
        estimate = covering.measurement.estimate
        ahead = [o for o in order[:order.index(covering)] if o.finding.rule_id in covered
                 and o.measurement.estimate.ci_low <= estimate.ci_high]
        if ahead:
            order.remove(covering)
            order.insert(order.index(ahead[0]), covering)
    return order


def _covered_by(plan: Plan, outcome: FindingOutcome) -> str | None:
    """Why the plan already does what ``outcome``'s candidate does (a step's ``Candidate.covers``); None if not."""
    for step in plan.steps:
        for rule_id, how in step.finding.candidate.covers:
            if rule_id == outcome.finding.rule_id:
                return f"not measured in the plan: its step {step.finding.rule_id} does it ({how})"
    return None


def _compiled_already(plan: Plan, outcome: FindingOutcome) -> str | None:
    """Why a compile is not added to a plan that compiles already (torch.compile with and without freezing are
    alternatives: compiling the compiled model again measures nothing a user would run); None if not a second one.
    The step came first because it measured faster alone."""
    if outcome.finding.candidate.stage is not PlanStage.COMPILER:
        return None
    for step in plan.steps:
        if step.finding.candidate.stage is PlanStage.COMPILER:
            return (f"not measured in the plan: its step {step.finding.rule_id} compiles the model already, and "
                    "measured faster alone (a plan compiles once)")
    return None
