"""The measuring phase: order by estimated saving, the time budget, and candidates that fail without stopping it."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
from convdoctor.analyzer.capture.workload import Workload, workload_from
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
from convdoctor.analyzer.measure.phase import MeasuringOptions, measure_findings
from convdoctor.progress import SilentProgress
from convdoctor.rules.base import Finding, Severity

QUICK = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                          warmup_s=0.0, warmup_steps=2, min_rounds=3, max_rounds=3, max_warmup_s=1.0)


@dataclass(frozen=True)
class Named:
    """A test finding's evidence: its name, which is also its message."""

    name: str

    def message(self) -> str:
        return self.name


def _finding(name: str, transform, saving: float | None) -> Finding:
    return Finding(rule_id="CD999", rule_name=name, severity=Severity.INFO, evidence=Named(name), fix=name, advice="",
                   snippet="", estimated_saving=saving,
                   candidate=Candidate(title=name, transform=transform, numerics=NumericsContract.EXACT,
                                       tolerance=1e-4))


def _raises(workload: Workload) -> Workload:
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _doubles_output(workload: Workload) -> Workload:
    return replace(workload, model=nn.Sequential(workload.model, _Scale(2.0)))


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _workload() -> Workload:
    torch.manual_seed(0)
    return workload_from(nn.Conv2d(3, 4, 3), torch.randn(1, 3, 16, 16), device="cpu")


def test_a_failing_candidate_is_reported_and_the_others_still_run():
    findings = [_finding("broken", _raises, 0.5), _finding("identity", lambda w: w, 0.1)]
    broken, identity = measure_findings(_workload(), findings, MeasuringOptions(benchmark=QUICK), SilentProgress())
    assert broken.measurement is None
    assert broken.not_measured.startswith("the candidate failed: RuntimeError: CUDA out of memory")
    assert identity.measurement is not None and identity.numerics_ok is True


def test_numerics_beyond_tolerance_are_flagged():
    (outcome,) = measure_findings(_workload(), [_finding("x2", _doubles_output, None)],
                                   MeasuringOptions(benchmark=QUICK), SilentProgress())
    assert outcome.numerics_ok is False
    assert outcome.measurement.numerics.max_rel_error > 0.4


def test_the_largest_estimated_saving_is_measured_first():
    tried = []

    def tracked(name: str):
        def transform(workload: Workload) -> Workload:
            tried.append(name)
            return workload
        return transform

    findings = [_finding("small", tracked("small"), 0.01), _finding("large", tracked("large"), 0.3)]
    measure_findings(_workload(), findings, MeasuringOptions(benchmark=QUICK, time_budget_s=60), SilentProgress())
    assert tried == ["large", "small"]


def test_a_spent_time_budget_stops_the_running_candidate_and_skips_the_rest():
    findings = [_finding("small", lambda w: w, 0.01), _finding("large", lambda w: w, 0.3)]
    small, large = measure_findings(_workload(), findings, MeasuringOptions(benchmark=QUICK, time_budget_s=0.0001),
                                     SilentProgress())
    assert large.measurement is None and "the rest of --time-budget" in large.not_measured
    assert small.measurement is None and "time budget (0.0001 s) ran out before" in small.not_measured


def test_rules_proposing_the_same_transform_share_one_measurement():
    def same(workload: Workload) -> Workload:
        return workload

    first = replace(_finding("first", same, 0.3), rule_id="CD101")
    second = replace(_finding("second", same, 0.1), rule_id="CD114")
    one, two = measure_findings(_workload(), [first, second], MeasuringOptions(benchmark=QUICK), SilentProgress())
    assert one.same_candidate_as is None and two.same_candidate_as == "CD101"
    assert two.measurement is one.measurement and two.finding is second


class _Hangs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            x = x + 0


def _hangs(workload: Workload) -> Workload:
    return replace(workload, model=_Hangs())


def test_a_candidate_past_its_timeout_is_stopped_and_the_others_still_run():
    findings = [_finding("hangs", _hangs, 0.5), _finding("identity", lambda w: w, 0.1)]
    hangs, identity = measure_findings(_workload(), findings, MeasuringOptions(benchmark=QUICK, timeout_s=1.0),
                                       SilentProgress())
    assert hangs.measurement is None
    assert "did not finish within 1 s" in hangs.not_measured and "--timeout" in hangs.not_measured
    assert identity.measurement is not None


def test_a_candidate_running_past_the_time_budget_is_stopped_when_the_budget_ends():
    (hangs,) = measure_findings(_workload(), [_finding("hangs", _hangs, 0.5)],
                                MeasuringOptions(benchmark=QUICK, time_budget_s=1.0), SilentProgress())
    assert hangs.measurement is None and "the rest of --time-budget" in hangs.not_measured


def test_a_process_setting_is_measured_in_worker_processes_and_kept_out_of_the_plan(process_setting_outcome):
    from convdoctor.analyzer.measure.benchmark import Verdict
    from convdoctor.analyzer.measure.plan import build_plan
    from convdoctor.rules.cd118_cpu_allocator import KEEP_HEAP

    workload, outcome, started = process_setting_outcome  # measure_findings with a KEEP_HEAP candidate (conftest)
    assert outcome.finding.candidate.process_environment == KEEP_HEAP and outcome.finding.rule_id == "CD999"
    assert outcome.measurement is not None and "worker processes" in outcome.measurement.timer
    assert len(started) == 2 * outcome.measurement.blocks  # the phase sent it to worker processes, not in-process
    assert outcome.numerics_ok is True
    faster = replace(outcome.measurement.estimate, verdict=Verdict.FASTER)
    accepted = replace(outcome, measurement=replace(outcome.measurement, estimate=faster))
    assert build_plan(workload, [accepted], MeasuringOptions(benchmark=QUICK), SilentProgress()) is None
    from convdoctor.reports.presentation import process_setting_sentence

    sentence = process_setting_sentence([outcome, accepted])  # the headline says so, as the plan cannot
    assert "a process setting (CD999) makes it" in sentence and "faster" in sentence and "worker processes" in sentence
    assert process_setting_sentence([replace(accepted, measurement=None)]) == ""


def test_a_process_setting_on_a_model_object_says_it_needs_a_model_file():
    from convdoctor.rules.cd118_cpu_allocator import KEEP_HEAP

    candidate = Candidate(title="allocator", transform=lambda w: w, numerics=NumericsContract.EXACT,
                          tolerance=1e-5, process_environment=KEEP_HEAP)
    finding = replace(_finding("allocator", lambda w: w, 0.1), candidate=candidate)
    (outcome,) = measure_findings(_workload(), [finding], MeasuringOptions(benchmark=QUICK), SilentProgress())
    assert outcome.measurement is None and "measured on a model file" in outcome.not_measured


def test_a_time_limit_holds_when_its_alarm_is_swallowed():
    """The alarm may go off inside code that catches everything (a callback): the limit still ends the block."""
    import pytest

    from convdoctor.analyzer.capture.workload import time_limit
    from convdoctor.errors import ModelTimeoutError

    with pytest.raises(ModelTimeoutError, match="did not finish within 0.01 s"):
        with time_limit(0.01, "this block"):
            try:
                time.sleep(0.05)
            except ModelTimeoutError:
                pass


class _Stages(SilentProgress):
    """Keeps every stage line; calls ``on_stage`` with each (to arm a failure at a given block)."""

    def __init__(self, on_stage=lambda text: None) -> None:
        self.lines: list[str] = []
        self.on_stage = on_stage

    def stage(self, text: str) -> None:
        self.lines.append(text)
        self.on_stage(text)


def test_without_a_budget_the_candidates_share_the_baselines_blocks():
    """Each candidate's first step, the largest saving first, then blocks that time the baseline and both: their
    intervals pair each with the same baseline steps."""
    findings = [replace(_finding("small", lambda w: w, 0.01), rule_id="CD998"), _finding("large", lambda w: w, 0.3)]
    stages = _Stages()
    small, large = measure_findings(_workload(), findings, MeasuringOptions(benchmark=QUICK), stages)
    assert [line.split(";")[0] for line in stages.lines] == [
        "measuring CD999 large: baseline vs large, first step and outputs",
        "measuring CD998 small: baseline vs small, first step and outputs",
        "measuring CD999, CD998 against one baseline: block 1 of 3",
        "measuring CD999, CD998 against one baseline: block 2 of 3",
        "measuring CD999, CD998 against one baseline: block 3 of 3"]
    assert small.measurement.blocks == large.measurement.blocks == 3
    assert small.measurement.rounds == large.measurement.rounds
    assert small.measurement.estimate.baseline_ms == large.measurement.estimate.baseline_ms
    assert small.measurement.first_step_s[0] == large.measurement.first_step_s[0]  # one first step of the baseline


class _FailsWhenArmed(nn.Module):
    armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FailsWhenArmed.armed:
            raise RuntimeError("CPU out of memory in a later block")
        return x


def test_a_candidate_that_fails_in_a_later_block_is_reported_and_the_others_finish():
    _FailsWhenArmed.armed = False

    def fails_later(workload: Workload) -> Workload:
        return replace(workload, model=nn.Sequential(workload.model, _FailsWhenArmed()))

    def arm(text: str) -> None:
        if "block 2 of" in text:
            _FailsWhenArmed.armed = True

    findings = [_finding("fails-later", fails_later, 0.3), _finding("identity", lambda w: w, 0.1)]
    try:
        failed, identity = measure_findings(_workload(), findings, MeasuringOptions(benchmark=QUICK), _Stages(arm))
    finally:
        _FailsWhenArmed.armed = False
    assert failed.measurement is None
    assert failed.not_measured.startswith("the candidate failed (in block 2): RuntimeError: CPU out of memory")
    assert identity.measurement is not None and identity.measurement.blocks == 3


def test_past_the_wrap_up_time_every_candidate_ends_at_its_minimum_blocks():
    """The default mode's soft limit for the phase: with it spent from the start, each comparison takes its
    ``min_blocks`` and no more, and says it stopped early; without it, every planned block."""
    settings = replace(QUICK, blocks=6, min_rounds=6, max_rounds=6, min_blocks=3)
    findings = [_finding("small", lambda w: w, 0.01), _finding("large", lambda w: w, 0.3)]
    wrapped = measure_findings(_workload(), findings, MeasuringOptions(benchmark=settings, wrap_up_after_s=0.0),
                               _Stages())
    assert [o.measurement.blocks for o in wrapped] == [3, 3]
    assert all(o.measurement.stopped_early for o in wrapped)
    full = measure_findings(_workload(), findings, MeasuringOptions(benchmark=replace(settings, early_stop=False),
                                                                    wrap_up_after_s=0.0), _Stages())
    assert [o.measurement.blocks for o in full] == [6, 6]
