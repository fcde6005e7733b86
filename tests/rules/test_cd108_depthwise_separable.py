"""CD108 depthwise-separable: triggers on dense k×k convs, not on a depthwise + pointwise pair; its candidate
cuts FLOPs by exactly the ratio predicted from the shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, file_analysis
from torch import nn

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.measure.model_cost import model_cost
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd108_depthwise_separable import DepthwiseSeparableRule, separable_flops_ratio, to_separable

SEED_RATIO = (64 * 9 + 64 * 128) / (64 * 128 * 9)  # (C·k² + C·K) / (C·K·k²) = 137/1152


def test_flops_ratio_formula():
    assert separable_flops_ratio(64, 128, [3, 3]) == pytest.approx(1 / 128 + 1 / 9)
    assert separable_flops_ratio(32, 64, [5, 5]) == pytest.approx(1 / 64 + 1 / 25)


def test_triggers_on_the_dense_seed_conv(seed_conv):
    _, analysis = seed_conv
    findings = list(DepthwiseSeparableRule().check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD108" and finding.rule_name == "depthwise-separable"
    assert finding.severity is Severity.INFO
    assert finding.layers == ["<model>"]
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    (row,) = evidence.layers
    flops = 2 * 128 * 64 * 9 * 224 * 224
    assert row.flops_per_call == flops
    assert row.flops_per_call_after == 2 * 224 * 224 * (64 * 9 + 64 * 128)  # depthwise + pointwise
    assert row.predicted_flops_ratio == pytest.approx(SEED_RATIO) == evidence.predicted_flops_ratio
    assert row.params_after == 64 * 9 + 64 * 128 + 128
    assert 0.5 < evidence.share <= 1.0 and evidence.not_replaceable == {}
    assert "0.119×" in finding.message and "7.40 GFLOP" in finding.message and "0.88 GFLOP" in finding.message
    assert "retrain" in finding.advice and "MobileNet" in finding.advice and "memory-bound" in finding.advice
    assert finding.estimated_saving is None
    assert finding.candidate is not None and finding.candidate.numerics is NumericsContract.ARCHITECTURE


def test_root_transform_builds_the_pair_and_cuts_flops_by_the_predicted_ratio(seed_conv):
    workload, _ = seed_conv
    small = workload_from(workload.model, workload.inputs[:, :, :32, :32], device="cpu")
    before = model_cost(small)
    original = small.model
    trial = to_separable(["<model>"])(small.copy())
    depthwise, pointwise = trial.model
    assert depthwise.groups == 64 and depthwise.weight.shape == (64, 1, 3, 3) and depthwise.bias is None
    assert depthwise.padding == (1, 1) and depthwise.stride == (1, 1)
    assert pointwise.kernel_size == (1, 1) and pointwise.weight.shape == (128, 64, 1, 1)
    assert pointwise.bias is not None  # the original conv has a bias
    after = model_cost(trial)
    assert after.flops * 1152 == before.flops * 137  # exactly (C·k² + C·K) / (C·K·k²), bias not counted
    assert after.params == 64 * 9 + 64 * 128 + 128 < before.params
    with torch.no_grad():
        assert trial.model(trial.inputs).shape == original(small.inputs).shape == (1, 128, 32, 32)
    assert small.model is original and type(original) is nn.Conv2d and original.groups == 1


def test_nested_conv_with_stride_dilation_and_reflect_padding(tmp_path: Path):
    workload, analysis = file_analysis(MODELS / "cd108_nested.py", tmp_path)
    rule = DepthwiseSeparableRule()
    rule.min_share = 0.0  # small layers' shares of one CPU step are noisy; the shapes decide here
    findings = list(rule.check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    # stem: 3 input channels; features.2: depthwise; features.3: 1×1; up: transposed
    assert finding.layers == ["features.0"]
    (row,) = finding.evidence.layers
    assert row.kernel == [5, 5] and row.predicted_flops_ratio == pytest.approx(1 / 64 + 1 / 25)

    before = model_cost(workload)
    trial = finding.candidate.transform(workload.copy())
    depthwise, pointwise = trial.model.features[0]
    assert (depthwise.kernel_size, depthwise.stride, depthwise.padding, depthwise.dilation) == \
           ((5, 5), (2, 2), (4, 4), (2, 2))
    assert depthwise.padding_mode == "reflect" and depthwise.groups == 32 and pointwise.bias is None
    after = model_cost(trial)
    assert before.flops - after.flops == row.flops_per_call - row.flops_per_call_after
    assert before.params - after.params == row.params - row.params_after
    with torch.no_grad():
        assert trial.model(trial.inputs).shape == workload.model(workload.inputs).shape
    assert type(workload.model.features[0]) is nn.Conv2d  # the original is untouched


def test_does_not_trigger_on_a_depthwise_separable_model(tmp_path: Path):
    _, analysis = file_analysis(EXAMPLES / "seed_separable.py", tmp_path)
    groups = {layer.name: layer.groups for layer in analysis.layers}
    assert groups == {"depthwise": 64, "pointwise": 1}
    rule = DepthwiseSeparableRule()
    rule.min_share = 0.0  # not even the smallest layer: the shapes alone rule these out
    assert list(rule.check(analysis)) == []


@pytest.mark.parametrize("options, triggers", [
    ({}, True),
    ({"min_share": 1.01}, False),
    ({"min_in_channels": 65}, False),
    ({"max_flops_ratio": 0.1}, False),  # the seed conv's pair keeps 0.119 of the FLOPs
    ({"min_kernel": 5}, False),
])
def test_options(seed_conv, options: dict, triggers: bool):
    rule = DepthwiseSeparableRule()
    for key, value in options.items():
        setattr(rule, key, value)
    assert len(list(rule.check(seed_conv[1]))) == int(triggers)


def test_transform_keeps_dtype_memory_format_and_training_state():
    model = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1, bias=False)).double()
    workload = to_channels_last(workload_from(model, torch.randn(2, 32, 8, 8, dtype=torch.float64), device="cpu",
                                              mode="train"))
    workload.model.train()
    pair = to_separable(["0"])(workload.copy()).model[0]
    assert isinstance(pair, nn.Sequential) and pair.training
    for conv in pair:
        assert conv.weight.dtype == torch.float64 and conv.weight.requires_grad and conv.training
        # one input channel per group (depthwise) or a 1×1 kernel (pointwise): NCHW and NHWC are the same layout
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_end_to_end_measures_an_architecture_change(tmp_path: Path):
    from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
    from convdoctor.api import ProfileOptions, profile_file

    options = ProfileOptions(out_dir=tmp_path, select=("CD108",), steps=1,
                             benchmark=BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                                                         warmup_s=0, min_rounds=4, max_rounds=4))
    report, files = profile_file(EXAMPLES / "seed_conv.py", options)
    (outcome,) = report.outcomes
    assert outcome.architecture is not None and outcome.measurement is not None
    assert outcome.architecture.flops_ratio == pytest.approx(SEED_RATIO)
    (entry,) = json.loads(files.json.read_text())["findings"]
    assert entry["architecture"]["needs_retraining"] is True
    assert entry["architecture"]["params_after"] == 64 * 9 + 64 * 128 + 128
    assert entry["measurement"]["max_abs_error"] is None
