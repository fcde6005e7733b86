"""CD113 conv-bias-before-bn: triggers on biased convs that feed a BatchNorm, in eval and train; not otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, capture_analysis
from torch import nn

from convdoctor.analyzer.candidates.candidate import NumericsContract, PlanStage
from convdoctor.analyzer.capture.workload import Workload, call_model, load_workload
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
from convdoctor.api import ProfileOptions, profile_file
from convdoctor.rules.base import evidence_fields
from convdoctor.rules.cd109_conv_bn_fold import fold_conv_bn
from convdoctor.rules.cd113_conv_bias_before_bn import ConvBiasBeforeBnRule, drop_bias_into_bn

MODEL = MODELS / "cd113_bias_bn.py"
PAIRS = {("conv1", "bn1"), ("conv2", "bn2")}


pytestmark = pytest.mark.usefixtures("one_thread")


def _analysis(workload: Workload, tmp_path: Path) -> ConvAnalysis:
    return capture_analysis(workload, tmp_path)


def _randomize_batch_norms(model: nn.Module) -> None:
    """Running statistics and affine parameters far from identity, so that moving the bias does real work."""
    torch.manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1, 0.3)
                module.bias.normal_(0, 0.3)
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.normal_(0, 1.0)  # larger than the default init, so a wrong move would show


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_triggers_in_eval_and_in_train(tmp_path: Path, mode: str):
    analysis = _analysis(load_workload(MODEL, device="cpu", mode=mode), tmp_path)
    findings = list(ConvBiasBeforeBnRule().check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD113" and finding.rule_name == "conv-bias-before-bn"
    evidence = finding.evidence
    assert evidence.mode == mode
    assert {(pair.conv, pair.bn) for pair in evidence.pairs} == PAIRS and evidence.pair_count == 2
    assert {pair.conv: pair.bias_params for pair in evidence.pairs} == {"conv1": 16, "conv2": 32}
    assert evidence.bias_params == 48 and "48 conv bias parameters" in finding.message
    assert set(finding.layers) == {"conv1", "conv2"}
    if not evidence.bias_ops:  # oneDNN fuses the bias into the conv kernel: the trace bounds no saving
        assert finding.estimated_saving is None and evidence.bias_share is None
        assert "not bounded" in finding.message
    candidate = finding.candidate
    assert candidate is not None and candidate.numerics is NumericsContract.EXACT
    assert candidate.tolerance == 1e-4 and candidate.stage is PlanStage.STRUCTURE
    fields = evidence_fields(evidence)
    assert json.loads(json.dumps(fields)) == fields


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN to tell its fused path apart")
def test_onednn_fuses_the_bias_so_no_saving_is_claimed(tmp_path: Path):
    analysis = _analysis(load_workload(MODEL, device="cpu"), tmp_path)
    [finding] = ConvBiasBeforeBnRule().check(analysis)
    assert finding.evidence.bias_ops == [] and finding.estimated_saving is None


@pytest.mark.parametrize("mode, ops", [("eval", ["aten::copy_"]), ("train", ["aten::copy_", "aten::sum"])])
def test_visible_bias_ops_bound_the_saving(tmp_path: Path, mode: str, ops: list[str]):
    """Without oneDNN the CPU conv broadcasts its bias into the output, and the backward sums grad_output."""
    with torch.backends.mkldnn.flags(enabled=False):
        analysis = _analysis(load_workload(MODEL, device="cpu", mode=mode), tmp_path)
    [finding] = ConvBiasBeforeBnRule().check(analysis)
    evidence = finding.evidence
    assert evidence.bias_ops == ops
    assert all(pair.bias_ops == ops and pair.bias_ms_per_step > 0 for pair in evidence.pairs)
    assert evidence.bias_ms_per_step == pytest.approx(sum(pair.bias_ms_per_step for pair in evidence.pairs))
    assert 0 < evidence.bias_share < 0.5  # of the traced step; the estimate is of the step without the profiler
    assert finding.estimated_saving == pytest.approx(evidence.bias_ms_per_step * 1e3 / analysis.unprofiled_step_us)
    assert "ms per step" in finding.message


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_candidate_keeps_outputs_on_a_copy(mode: str):
    workload = load_workload(MODEL, device="cpu", mode=mode)
    _randomize_batch_norms(workload.model)
    changed = drop_bias_into_bn(sorted(PAIRS))(workload.copy())
    for conv, bn in PAIRS:
        assert changed.model.get_submodule(conv).bias is None
        assert workload.model.get_submodule(conv).bias is not None  # the original keeps its biases
        moved = workload.model.get_submodule(bn).running_mean - workload.model.get_submodule(conv).bias
        torch.testing.assert_close(changed.model.get_submodule(bn).running_mean, moved)
    getattr(workload.model, mode)()
    getattr(changed.model, mode)()
    with torch.no_grad():
        expected = call_model(workload.model, workload.inputs)
        actual = call_model(changed.model, changed.inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    if mode == "train":  # the running means moved by the batch means stay one bias apart: eval still agrees
        workload.model.eval()
        changed.model.eval()
        with torch.no_grad():
            torch.testing.assert_close(call_model(changed.model, changed.inputs),
                                       call_model(workload.model, workload.inputs), rtol=1e-5, atol=1e-5)


def test_candidate_after_a_conv_bn_fold_changes_nothing():
    """In a combined plan CD109 may fold the BN first: the bias then lives in the fused conv and stays there."""
    workload = load_workload(MODEL, device="cpu")
    folded = fold_conv_bn(sorted(PAIRS))(workload.copy())
    after = drop_bias_into_bn(sorted(PAIRS))(folded)
    assert all(after.model.get_submodule(conv).bias is not None for conv, _ in PAIRS)


def test_does_not_trigger_without_conv_biases(tmp_path: Path):
    analysis = _analysis(load_workload(EXAMPLES / "small_cnn.py", device="cpu"), tmp_path)
    assert analysis.layers and all(layer.bias_numel == 0 for layer in analysis.layers)
    assert list(ConvBiasBeforeBnRule().check(analysis)) == []


def test_does_not_trigger_when_a_relu_comes_between(tmp_path: Path):
    analysis = _analysis(load_workload(MODELS / "cd113_bias_relu.py", device="cpu"), tmp_path)
    assert {layer.name: layer.bias_numel for layer in analysis.layers} == {"conv1": 16, "conv2": 16}
    assert list(ConvBiasBeforeBnRule().check(analysis)) == []


def test_profile_measures_the_change(tmp_path: Path):
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0, min_rounds=5, max_rounds=5)
    report, _ = profile_file(MODEL, ProfileOptions(device="cpu", out_dir=tmp_path, steps=1, select=("CD113",),
                                                   benchmark=settings))
    [outcome] = [o for o in report.outcomes if o.finding.rule_id == "CD113"]
    assert outcome.measurement is not None, outcome.not_measured
    assert outcome.numerics_ok is True
    assert outcome.measurement.rounds == 5 and outcome.measurement.estimate.speedup > 0


def test_profile_measures_the_change_in_train_mode(tmp_path: Path):
    """Gradients are compared by parameter name over the parameters both models keep (the biases are gone)."""
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0, min_rounds=5, max_rounds=5)
    report, _ = profile_file(MODEL, ProfileOptions(device="cpu", mode="train", out_dir=tmp_path, steps=1,
                                                   select=("CD113",), benchmark=settings))
    [outcome] = [o for o in report.outcomes if o.finding.rule_id == "CD113"]
    assert outcome.measurement is not None, outcome.not_measured
    assert outcome.numerics_ok is True
    assert outcome.measurement.numerics.max_grad_rel_error is not None
    assert outcome.measurement.numerics.max_grad_rel_error < 1e-4
