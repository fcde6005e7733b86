"""CD116 torch-compile: opt-in; fires on an eager model, not on a compiled one; its candidate is measured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import capture_analysis
from torch import nn

from convdoctor.analyzer.candidates.candidate import PlanStage
from convdoctor.analyzer.candidates.transforms import compiled
from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Verdict
from convdoctor.api import ProfileOptions, profile
from convdoctor.rules.cd116_torch_compile import TorchCompileRule
from convdoctor.rules.registry import load_rules, select_rules


def _model() -> nn.Module:
    """Cheap 1×1 convs among batch norms and activations: the eager ops take a quarter to a third of the step on
    2 cores, far above min_share even when a preempted step doubles the step time (two steps are profiled)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.GELU(), nn.SiLU())


def _analysis(model: nn.Module, tmp_path: Path):
    workload = workload_from(model, torch.randn(2, 3, 64, 64), device="cpu")
    return capture_analysis(workload, tmp_path, steps=2)


def test_is_opt_in():
    rules = load_rules().rules
    assert "CD116" not in [r.id for r in select_rules(rules)]
    assert "CD116" not in [r.id for r in select_rules(rules, select=("CD1",))]
    assert [r.id for r in select_rules(rules, select=("CD116",))] == ["CD116"]
    assert [r.id for r in select_rules(rules, select=("torch-compile",))] == ["CD116"]


def test_triggers_on_an_eager_model(tmp_path: Path):
    (finding,) = TorchCompileRule().check(_analysis(_model(), tmp_path))
    assert finding.rule_id == "CD116"
    evidence = finding.evidence
    assert evidence.eager_ops_per_step >= 5  # two batch norms and three activations
    names = [name for name, _ in evidence.most_common]
    assert "aten::batch_norm" in names and "aten::relu" in names
    assert 0.05 <= evidence.eager_share < 1
    assert finding.candidate.stage is PlanStage.COMPILER  # outermost: autocast runs inside the compiled graph


def test_does_not_trigger_on_a_compiled_model(tmp_path: Path):
    analysis = _analysis(compiled(workload_from(_model(), torch.zeros(1), device="cpu")).model, tmp_path)
    assert analysis.layers  # the convs are still seen inside the compiled region
    assert list(TorchCompileRule().check(analysis)) == []


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_the_compiled_candidate_is_measured_and_its_compile_time_reported(tmp_path: Path):
    from torch._inductor import config as inductor_config

    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0, min_rounds=5, max_rounds=5)
    model = _model().eval()
    # inductor's caches (on disk, kept between runs) would load the code an earlier test compiled: compile it here
    with inductor_config.patch(force_disable_caches=True):
        report, _ = profile(model, torch.randn(2, 3, 64, 64), ProfileOptions(
            device="cpu", out_dir=tmp_path, steps=1, select=("CD116",), benchmark=settings))
    (outcome,) = report.outcomes
    assert outcome.measurement is not None, outcome.not_measured
    assert outcome.numerics_ok is True
    _, compiled_first = outcome.measurement.first_step_s
    assert compiled_first * 1e3 > 5 * outcome.measurement.estimate.candidate_ms  # the first call compiled
    assert outcome.measurement.estimate.verdict in set(Verdict)
    assert not hasattr(model, "_compiled")  # the user's model was never compiled in place
