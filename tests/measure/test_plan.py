"""The combined plan: accepted candidates applied together in stage order and measured as one."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage, combine
from convdoctor.analyzer.capture.workload import Workload, workload_from
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Verdict
from convdoctor.analyzer.measure.phase import MeasuringOptions, measure_findings
from convdoctor.analyzer.measure.plan import build_plan
from convdoctor.analyzer.measure.results import Plan
from convdoctor.progress import SilentProgress
from convdoctor.reports.presentation import left_out_lines, plan_lines
from convdoctor.rules.base import Finding, Severity

QUICK = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                          warmup_s=0.0, warmup_steps=2, min_rounds=6, max_rounds=6, max_warmup_s=2.0)


class Nap(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def _without(name: str):
    def transform(workload: Workload) -> Workload:
        getattr(workload.model, name).seconds = 0.0
        return workload
    return transform


@dataclass(frozen=True)
class Named:
    """A test finding's evidence: its name, which is also its message."""

    name: str

    def message(self) -> str:
        return self.name


def _finding(name: str, transform, stage: PlanStage = PlanStage.LAYOUT, saving: float | None = None) -> Finding:
    return Finding(rule_id="CD999", rule_name=name, severity=Severity.INFO, evidence=Named(name), fix=f"drop {name}",
                   advice="", snippet=f"del model.{name}", estimated_saving=saving,
                   candidate=Candidate(title=f"no {name}", transform=transform, numerics=NumericsContract.EXACT,
                                       tolerance=1e-4, stage=stage))


def test_combine_applies_in_stage_order_and_adds_tolerances():
    applied: list[str] = []

    def mark(label: str):
        return lambda w: applied.append(label) or w

    wrapper = Candidate("wrap", mark("wrap"), NumericsContract.APPROXIMATE, 1e-2, PlanStage.WRAPPER)
    layout = Candidate("layout", mark("layout"), NumericsContract.EXACT, 1e-4, PlanStage.LAYOUT)
    surgery = Candidate("fold", mark("fold"), NumericsContract.EXACT, 1e-4, PlanStage.STRUCTURE)
    combined = combine([wrapper, layout, surgery])
    combined.transform(workload_from(nn.Identity(), torch.zeros(1), device="cpu"))
    assert applied == ["fold", "layout", "wrap"]
    assert combined.numerics is NumericsContract.APPROXIMATE and abs(combined.tolerance - 0.0102) < 1e-12
    assert combined.title == "fold + layout + wrap"


def test_plan_measures_the_accepted_fixes_together():
    model = nn.Sequential()
    model.add_module("first", Nap(0.02))
    model.add_module("second", Nap(0.02))
    workload = workload_from(model, torch.zeros(2), device="cpu")
    findings = [_finding("first", _without("first"), saving=0.5), _finding("second", _without("second")),
                _finding("rewrite", lambda w: replace(w, model=nn.Sequential(Nap(0.0))))]
    findings[2] = replace(findings[2], candidate=replace(findings[2].candidate,
                                                         numerics=NumericsContract.ARCHITECTURE))
    options = MeasuringOptions(benchmark=QUICK)
    outcomes = measure_findings(workload, findings, options, SilentProgress())
    assert all(o.measurement.estimate.verdict is Verdict.FASTER for o in outcomes[:2])
    plan = build_plan(workload, outcomes, options, SilentProgress())
    assert plan is not None and [s.finding.rule_name for s in plan.steps] == sorted(
        ["first", "second"], key=lambda n: -outcomes[["first", "second"].index(n)].measurement.estimate.speedup)
    assert "rewrite" not in [s.finding.rule_name for s in plan.steps]  # an architecture change needs retraining
    alone = max(o.measurement.estimate.speedup for o in outcomes[:2])
    assert plan.measurement.estimate.verdict is Verdict.FASTER and plan.left_out == []
    assert plan.measurement.estimate.speedup > 2 * alone  # both naps gone: far more than either alone
    assert workload.model.first.seconds == 0.02  # the workload itself was never changed
    lines = plan_lines(plan)
    assert lines[-1].startswith("together: ")
    first = next(s for s in plan.steps if s.finding.rule_name == "first")
    predicted = first.finding.predicted_speedup
    assert predicted == 2.0  # half of the step saved
    assert abs(first.measurement.estimate.speedup / predicted - 1) < 0.15  # and one 20 ms nap of two is half
    assert "; predicted 2.00×" in next(line for line in lines if line.startswith("drop first"))
    assert "predicted" not in next(line for line in lines if line.startswith("drop second"))  # no estimate


def _every_nap(seconds: float):
    def transform(workload: Workload) -> Workload:
        for nap in workload.model:
            nap.seconds = seconds
        return workload
    return transform


def test_a_fix_that_undoes_another_is_left_out_with_the_measurement_that_showed_it():
    """Each is faster alone (2x and 1.3x), but applied after the first, the second puts its nap back: the plan keeps
    the first only, says why, and its measurement is the first's own."""
    model = nn.Sequential()
    model.add_module("first", Nap(0.02))
    model.add_module("second", Nap(0.02))
    workload = workload_from(model, torch.zeros(2), device="cpu")
    findings = [_finding("first", _without("first")), _finding("evenly", _every_nap(0.015))]
    options = MeasuringOptions(benchmark=QUICK)
    outcomes = measure_findings(workload, findings, options, SilentProgress())
    assert all(o.measurement.estimate.verdict is Verdict.FASTER for o in outcomes)
    plan = build_plan(workload, outcomes, options, SilentProgress())
    assert plan is not None and [s.finding.rule_name for s in plan.steps] == ["first"]
    assert plan.measurement is outcomes[0].measurement
    (left,) = plan.left_out
    assert left.outcome is outcomes[1] and left.measurement is not None
    assert left.measurement.estimate.speedup < plan.measurement.estimate.speedup  # ~1.33x against ~2x
    assert "the plan with it measured" in left.reason
    assert left_out_lines(plan)[0].startswith("left out: drop evenly (CD999), alone ")


def _plan_of_two_naps(large_candidate: dict, small_candidate: dict) -> Plan:
    """Two candidates that each measure faster (CD901 drops both naps, CD902 the small one), their Candidates
    changed by ``*_candidate``; the plan built from them, led by CD901."""
    model = nn.Sequential()
    model.add_module("large", Nap(0.03))
    model.add_module("small", Nap(0.01))
    workload = workload_from(model, torch.zeros(2), device="cpu")
    large, small = _finding("large", _every_nap(0.0)), _finding("small", _without("small"))
    large = replace(large, rule_id="CD901", candidate=replace(large.candidate, **large_candidate))
    small = replace(small, rule_id="CD902", candidate=replace(small.candidate, **small_candidate))
    options = MeasuringOptions(benchmark=QUICK)
    outcomes = measure_findings(workload, [large, small], options, SilentProgress())
    assert all(o.measurement.estimate.verdict is Verdict.FASTER for o in outcomes)
    plan = build_plan(workload, outcomes, options, SilentProgress())
    assert plan is not None and [s.finding.rule_id for s in plan.steps] == ["CD901"]
    return plan


def test_a_fix_that_a_plan_step_already_does_is_left_out_unmeasured_with_the_reason():
    """A candidate that covers another rule's (inductor freezing folds BatchNorm, as CD109 does): once it is in the
    plan, that rule's fix is not combined and measured again, and the plan says why."""
    plan = _plan_of_two_naps({"covers": (("CD902", "it drops every nap"),)}, {})
    (left,) = plan.left_out
    assert left.outcome.finding.rule_id == "CD902" and left.measurement is None
    assert left.reason == "not measured in the plan: its step CD901 does it (it drops every nap)"
    assert left.reason in left_out_lines(plan)[0]


@pytest.mark.parametrize(("covered_interval", "steps"), [
    ((1.2, 1.6), ["CD901"]),  # overlaps the covering one's: the plan is the candidate that does both
    ((1.8, 2.0), ["CD902", "CD901"]),  # faster beyond doubt: it leads, and the covering one is measured on top
])
def test_a_candidate_that_covers_another_leads_the_plan_unless_that_one_is_faster_beyond_doubt(
        covered_interval: tuple[float, float], steps: list[str]):
    """CD901 does what CD902 does (inductor's freezing lays convs out in channels_last on the CPU) and measured
    slower alone (1.34x against CD902's higher speedup): only an interval of CD902's wholly above CD901's puts CD902
    first."""
    model = nn.Sequential()
    model.add_module("large", Nap(0.03))
    model.add_module("small", Nap(0.01))
    workload = workload_from(model, torch.zeros(2), device="cpu")
    large, small = _finding("large", _every_nap(0.0)), _finding("small", _without("small"))
    covers = (("CD902", "it drops every nap"),)
    large = replace(large, rule_id="CD901", candidate=replace(large.candidate, covers=covers))
    small = replace(small, rule_id="CD902")
    options = MeasuringOptions(benchmark=QUICK)
    measured = measure_findings(workload, [large, small], options, SilentProgress())
    speedups = [(1.34, (1.25, 1.45)), (sum(covered_interval) / 2, covered_interval)]
    outcomes = [replace(o, measurement=replace(o.measurement, estimate=replace(
        o.measurement.estimate, speedup=speedup, ci_low=low, ci_high=high))) for o, (speedup, (low, high))
        in zip(measured, speedups)]
    plan = build_plan(workload, outcomes, options, SilentProgress())
    assert [s.finding.rule_id for s in plan.steps] == steps
    if steps == ["CD901"]:
        (left_out,) = plan.left_out
        assert left_out.outcome.finding.rule_id == "CD902" and left_out.measurement is None
        assert "its step CD901 does it" in left_out.reason


def test_a_second_compile_is_left_out_of_a_plan_that_compiles_already():
    """torch.compile with and without freezing are alternatives: the faster alone leads the plan, and the other is
    not compiled on top of it (one advice_quality run measured CD116 + CD120 together)."""
    plan = _plan_of_two_naps({"stage": PlanStage.COMPILER}, {"stage": PlanStage.COMPILER})
    (left,) = plan.left_out
    assert left.outcome.finding.rule_id == "CD902" and left.measurement is None
    assert "its step CD901 compiles the model already" in left.reason


def test_the_identity_candidate_is_no_measurable_difference_and_gives_no_plan():
    """With the second look on (the harness's default ``extra_blocks``): a no-op that drifts open gets more blocks,
    never a verdict."""
    workload = workload_from(nn.Sequential(Nap(0.01)), torch.zeros(2), device="cpu")
    settings = BenchmarkSettings(block_spacing_s=0,
                                 warmup_s=0.0, warmup_steps=2, min_rounds=15, max_rounds=15, max_warmup_s=2.0)
    assert settings.extra_blocks > 0
    outcomes = measure_findings(workload, [_finding("noop", lambda w: w)], MeasuringOptions(benchmark=settings),
                                SilentProgress())
    estimate = outcomes[0].measurement.estimate
    assert estimate.verdict is Verdict.NO_DIFFERENCE, estimate
    assert outcomes[0].numerics_ok is True
    assert build_plan(workload, outcomes, MeasuringOptions(benchmark=settings), SilentProgress()) is None


def test_a_prediction_says_what_kind_of_bound_it_is():
    from convdoctor.reports.presentation import predicted_saving
    from convdoctor.rules.base import SavingBound

    fold = replace(_finding("bn", _without("bn")), estimated_saving=0.04)
    assert predicted_saving(fold) == "predicted saving 4%"
    copies = replace(fold, estimated_saving=0.02, saving_bound=SavingBound.PART)
    assert predicted_saving(copies) == "2% visible in the trace (the rest of the effect is not)"
    assert predicted_saving(replace(fold, saving_bound=SavingBound.AT_MOST)) == "predicted saving at most 4%"
    assert predicted_saving(replace(fold, estimated_saving=-0.03)) == "predicted to cost 3%"
