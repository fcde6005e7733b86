"""CD109 conv-bn-fold: triggers on conv -> BatchNorm pairs in eval, not in training nor on BNs that no conv feeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, SHARED_TRACES, capture_analysis
from torch import nn

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.capture.workload import Workload, call_model, load_workload
from convdoctor.analyzer.conv.layers import ConvAnalysis, analyze_convs
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
from convdoctor.analyzer.trace.profile import EventKind
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.api import ProfileOptions, profile_file
from convdoctor.rules.base import evidence_fields
from convdoctor.rules.cd109_conv_bn_fold import ConvBnFoldRule, find_pairs

SMALL_CNN_PAIRS = {("stem.0", "stem.1")} | {
    (f"layer{stage}.{block}.conv{i}", f"layer{stage}.{block}.bn{i}")
    for stage in (1, 2, 3) for block in (0, 1) for i in (1, 2)
} | {(f"layer{stage}.0.downsample.0", f"layer{stage}.0.downsample.1") for stage in (2, 3)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _analysis(workload: Workload, tmp_path: Path) -> ConvAnalysis:
    return capture_analysis(workload, tmp_path)


@pytest.fixture(scope="module")
def small_cnn_eval(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workload, ConvAnalysis]:
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu")
    return workload, _analysis(workload, tmp_path_factory.mktemp("cd109"))


def test_triggers_on_every_conv_bn_pair_in_eval(small_cnn_eval):
    _, analysis = small_cnn_eval
    findings = list(ConvBnFoldRule().check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD109" and finding.rule_name == "conv-bn-fold"
    pairs = finding.evidence.pairs
    assert {(pair.conv, pair.bn) for pair in pairs} == SMALL_CNN_PAIRS
    assert set(finding.layers) == {conv for conv, _ in SMALL_CNN_PAIRS} == {layer.name for layer in analysis.layers}
    output_shapes = {layer.name: layer.output_shape for layer in analysis.layers}
    assert all(pair.shape == output_shapes[pair.conv] and pair.calls_per_step == 1 for pair in pairs)
    assert all(pair.bn_ms_per_step > 0 for pair in pairs)
    assert finding.evidence.bn_ms_per_step == pytest.approx(sum(pair.bn_ms_per_step for pair in pairs))
    assert finding.evidence.mode == "eval" and finding.evidence.skipped == []
    assert 0 < finding.evidence.bn_share < 1
    # what folding removes is the BN operators' time, not the whole module call (which holds the profiler's hooks)
    bn_calls = [op for op in analysis.profile.ops if op.scope is not None and op.scope.class_name == "BatchNorm2d"]
    operators_us = sum(child.dur_us for call in bn_calls for child in call.children if child.kind is EventKind.CPU_OP)
    assert finding.evidence.bn_ms_per_step * 1e3 == pytest.approx(operators_us / analysis.profile.step_count)
    assert operators_us < sum(call.dur_us for call in bn_calls)
    # predicted over the step timed without the profiler, which convdoctor's capture records
    assert finding.estimated_saving == finding.evidence.predicted_share == pytest.approx(
        finding.evidence.bn_ms_per_step * 1e3 / analysis.unprofiled_step_us)
    assert f"{pairs[0].conv} -> {pairs[0].bn} and 14 more pairs: BN costs" in finding.message
    assert finding.candidate is not None and finding.candidate.numerics is NumericsContract.EXACT
    assert finding.candidate.tolerance <= 1e-4
    fields = evidence_fields(finding.evidence)
    assert json.loads(json.dumps(fields)) == fields  # plain values, as the JSON report needs


def test_candidate_folds_a_copy_within_tolerance(small_cnn_eval):
    workload, analysis = small_cnn_eval
    [finding] = ConvBnFoldRule().check(analysis)
    torch.manual_seed(2)  # running statistics and affine parameters far from identity, so the fold does real work
    with torch.no_grad():
        for module in workload.model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1, 0.3)
                module.bias.normal_(0, 0.3)
    folded = finding.candidate.transform(workload.copy())
    for conv, bn in SMALL_CNN_PAIRS:
        assert isinstance(folded.model.get_submodule(bn), nn.Identity)
        assert isinstance(folded.model.get_submodule(conv), nn.Conv2d)
        assert folded.model.get_submodule(conv).bias is not None  # the BN shift lives in the bias now
        assert isinstance(workload.model.get_submodule(bn), nn.BatchNorm2d)  # the original keeps its BNs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.model.modules())
    workload.model.eval()
    with torch.no_grad():
        expected = call_model(workload.model, workload.inputs)
        actual = call_model(folded.model.eval(), folded.inputs)
    rel_error = ((actual - expected).abs().max() / expected.abs().max()).item()
    assert rel_error <= finding.candidate.tolerance


def test_profile_measures_the_fold(tmp_path: Path):
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0, min_rounds=5, max_rounds=5)
    report, _ = profile_file(EXAMPLES / "small_cnn.py", ProfileOptions(
        device="cpu", out_dir=tmp_path, steps=1, select=("CD109",), benchmark=settings))
    [outcome] = [o for o in report.outcomes if o.finding.rule_id == "CD109"]
    assert outcome.measurement is not None, outcome.not_measured
    assert outcome.numerics_ok is True
    assert outcome.measurement.rounds == 5 and outcome.measurement.estimate.speedup > 0


def test_does_not_trigger_in_training(tmp_path: Path):
    analysis = _analysis(load_workload(EXAMPLES / "small_cnn.py", device="cpu", mode="train"), tmp_path)
    assert analysis.mode == "train"
    assert list(ConvBnFoldRule().check(analysis)) == []
    _, skipped = find_pairs(analysis)  # even read pair by pair, every BN normalizes with batch statistics
    assert {(s.conv, s.bn) for s in skipped} == SMALL_CNN_PAIRS
    assert all("training mode" in s.reason for s in skipped)


def test_does_not_fold_batch_norms_that_no_conv_feeds_alone(tmp_path: Path):
    analysis = _analysis(load_workload(MODELS / "cd109_not_foldable.py", device="cpu"), tmp_path)
    assert analysis.mode == "eval"
    assert list(ConvBnFoldRule().check(analysis)) == []
    pairs, skipped = find_pairs(analysis)
    assert pairs == []
    # bn_in (on the input) and bn_relu (after a ReLU) have no conv right before them; bn2 follows conv2, but conv2
    # is called a second time with no BN after it
    assert [(s.conv, s.bn) for s in skipped] == [("conv2", "bn2")] and "also called" in skipped[0].reason


def test_mode_from_backward_ops_when_the_trace_has_no_recorded_mode():
    analysis = analyze_convs(load_profile(SHARED_TRACES["resnet50"]))
    assert analysis.profile.environment.mode is None
    assert analysis.mode == "train"
    assert list(ConvBnFoldRule().check(analysis)) == []
