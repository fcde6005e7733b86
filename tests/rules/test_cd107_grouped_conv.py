"""CD107 grouped-conv: triggers on wide dense k×k convs, not on grouped or 1×1 ones; its candidate cuts FLOPs ÷g."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, file_analysis
from torch import nn

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.candidates.conv_replacement import replace_convs
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.measure.model_cost import model_cost
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd107_grouped_conv import GroupedConvRule, to_grouped


def test_triggers_on_the_dense_seed_conv(seed_conv):
    _, analysis = seed_conv
    findings = list(GroupedConvRule().check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD107" and finding.rule_name == "grouped-conv"
    assert finding.severity is Severity.INFO
    assert finding.layers == ["<model>"]
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))  # goes into report.json as it is
    assert evidence.groups == 4 and evidence.predicted_flops_ratio == 0.25
    (row,) = evidence.layers
    flops = 2 * 128 * 64 * 9 * 224 * 224  # 2·N·K·C·k²·P·Q, N = 1
    assert row.flops_per_call == flops and row.flops_per_call_after == flops // 4
    assert row.params == 128 * 64 * 9 + 128 and row.params_after == 128 * 16 * 9 + 128
    assert (row.in_channels, row.out_channels, row.kernel) == (64, 128, [3, 3])
    assert 0.5 < row.share <= 1.0 and evidence.share == row.share
    assert evidence.not_replaceable == {}
    assert "7.40 GFLOP" in finding.message and "1.85 GFLOP" in finding.message and "÷4" in finding.message
    assert f"{row.share:.0%}" in finding.message
    assert "retrain" in finding.advice and "ResNeXt" in finding.advice and "shuffle" in finding.advice
    assert finding.estimated_saving is None  # FLOPs bound no time: only the measurement speaks
    assert finding.candidate is not None and finding.candidate.numerics is NumericsContract.ARCHITECTURE


def test_root_transform_cuts_flops_and_params_by_g_on_a_copy(seed_conv):
    workload, _ = seed_conv
    small = workload_from(workload.model, workload.inputs[:, :, :32, :32], device="cpu")  # same conv, small input
    before = model_cost(small)
    original_weight = small.model.weight.detach().clone()
    grouped = to_grouped(["<model>"], 4)(small.copy())
    conv = grouped.model
    assert type(conv) is nn.Conv2d and conv.groups == 4
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation) == \
           (64, 128, (3, 3), (1, 1), (1, 1), (1, 1))
    assert conv.bias is not None and conv.weight.shape == (128, 16, 3, 3)
    after = model_cost(grouped)
    assert after.flops * 4 == before.flops  # exactly ÷4: FlopCounterMode does not count the bias
    assert after.params == 128 * 16 * 9 + 128 and before.params == 128 * 64 * 9 + 128
    with torch.no_grad():
        assert grouped.model(grouped.inputs).shape == small.model(small.inputs).shape == (1, 128, 32, 32)
    assert small.model.groups == 1 and torch.equal(small.model.weight, original_weight)  # original untouched


def test_nested_convs_grouped_and_functional_conv_named_but_left_alone(tmp_path: Path):
    workload, analysis = file_analysis(MODELS / "cd107_nested.py", tmp_path)
    rule = GroupedConvRule()
    rule.min_share = 0.0  # small layers' shares of one CPU step are noisy; the shapes decide here
    findings = list(rule.check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    assert set(finding.layers) == {"body.0.conv", "body.1"}  # stem: 3 channels; head: 1×1
    assert finding.evidence.not_replaceable.keys() == {"<model>:conv2d#0"}
    assert "functional" in finding.evidence.not_replaceable["<model>:conv2d#0"]
    rows = {row.name: row for row in finding.evidence.layers}
    assert rows["body.1"].flops_per_call == 2 * 128 * 64 * 9 * 32 * 32
    assert finding.message.startswith("2 dense conv layers")
    json.dumps(evidence_fields(finding.evidence))

    before = model_cost(workload)
    trial = finding.candidate.transform(workload.copy())
    assert trial.model.body[0].conv.groups == 4 and trial.model.body[1].groups == 4
    assert trial.model.stem.groups == 1 and trial.model.head.groups == 1
    assert trial.model.body[1].stride == (2, 2) and trial.model.body[0].conv.bias is None
    after = model_cost(trial)
    saved = sum(row.flops_per_call - row.flops_per_call_after for row in finding.evidence.layers)
    assert before.flops - after.flops == saved  # exactly the predicted cut, every other layer unchanged
    assert before.params - after.params == sum(row.params - row.params_after for row in rows.values())
    with torch.no_grad():
        assert trial.model(trial.inputs).shape == workload.model(workload.inputs).shape
    assert workload.model.body[1].groups == 1 and workload.model.body[0].conv.groups == 1


@pytest.mark.parametrize("model_file", [EXAMPLES / "seed_grouped.py", MODELS / "cd107_pointwise_only.py"],
                         ids=["already-grouped", "pointwise-only"])
def test_does_not_trigger_on_grouped_or_pointwise_convs(tmp_path: Path, model_file: Path):
    _, analysis = file_analysis(model_file, tmp_path)
    rule = GroupedConvRule()
    rule.min_share = 0.0  # not even the smallest layer: the shapes alone rule these out
    assert analysis.layers and list(rule.check(analysis)) == []


@pytest.mark.parametrize("options, expected", [
    ({}, 4),
    ({"min_share": 1.01}, None),
    ({"groups": 3}, None),  # does not divide 64 and 128
    ({"groups": 8}, None),  # 64 / 8 = 8 channels per group < 16
    ({"groups": 8, "min_channels_per_group": 8}, 8),
])
def test_options(seed_conv, options: dict, expected: int | None):
    rule = GroupedConvRule()
    for key, value in options.items():
        setattr(rule, key, value)
    findings = list(rule.check(seed_conv[1]))
    if expected is None:
        assert findings == []
    else:
        assert [f.evidence.groups for f in findings] == [expected]
        assert findings[0].evidence.predicted_flops_ratio == 1 / expected


def test_transform_keeps_dtype_memory_format_and_training_state():
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1)).double()
    workload = to_channels_last(workload_from(model, torch.randn(2, 32, 8, 8, dtype=torch.float64), device="cpu",
                                              mode="train"))
    workload.model.train()
    conv = to_grouped(["0"], 2)(workload.copy()).model[0]
    assert conv.groups == 2 and conv.weight.dtype == torch.float64 and conv.weight.device == workload.device
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert conv.training and conv.weight.requires_grad


def test_a_shared_conv_is_replaced_under_every_name_it_has():
    shared = nn.Conv2d(16, 16, 3, padding=1)
    workload = workload_from(nn.Sequential(shared, nn.ReLU(), shared), torch.randn(1, 16, 8, 8), device="cpu")
    model = to_grouped(["0"], 4)(workload.copy()).model
    assert model[0] is model[2] and model[0].groups == 4


def test_transform_refuses_a_module_that_is_not_a_conv2d():
    workload = workload_from(nn.Sequential(nn.Conv2d(16, 16, 3), nn.ReLU()), torch.randn(1, 16, 8, 8), device="cpu")
    with pytest.raises(TypeError, match="ReLU"):
        replace_convs(workload.copy(), ["1"], lambda old: old)


def test_end_to_end_measures_an_architecture_change(tmp_path: Path):
    from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
    from convdoctor.api import ProfileOptions, profile_file

    options = ProfileOptions(out_dir=tmp_path, select=("CD107",), steps=1,
                             benchmark=BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                                                         warmup_s=0, min_rounds=4, max_rounds=4, early_stop=False))
    report, files = profile_file(EXAMPLES / "seed_conv.py", options)
    (outcome,) = report.outcomes
    assert outcome.finding.rule_id == "CD107" and outcome.measurement is not None
    assert outcome.architecture is not None
    assert outcome.architecture.flops_ratio == pytest.approx(0.25)
    assert outcome.architecture.params_ratio == pytest.approx((128 * 16 * 9 + 128) / (128 * 64 * 9 + 128))
    (entry,) = json.loads(files.json.read_text())["findings"]
    assert entry["candidate"]["numerics"] == "architecture change"
    assert entry["architecture"]["needs_retraining"] is True
    assert entry["architecture"]["flops_ratio"] == pytest.approx(0.25)
    assert entry["measurement"]["max_abs_error"] is None and entry["measurement"]["rounds"] == 4
    assert entry["measurement"]["ci_low"] <= entry["measurement"]["speedup"] <= entry["measurement"]["ci_high"]
