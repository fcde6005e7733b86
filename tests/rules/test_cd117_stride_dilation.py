"""CD117 stride-dilation: conv -> (ReLU) -> 2×2/2 pooling pairs become stride-2 convs (architecture change, FLOPs
÷4, measured); dilated convs are compared with the undilated ones of the same run."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from conftest import MODELS, SCHEMA, capture_analysis, file_analysis

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
from convdoctor.analyzer.measure.model_cost import model_cost
from convdoctor.rules.base import evidence_fields
from convdoctor.rules.cd117_stride_dilation import StrideDilationRule, achieved_gflops, conv_pool_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def conv_pool(tmp_path_factory: pytest.TempPathFactory):
    return file_analysis(MODELS / "cd117_conv_pool.py", tmp_path_factory.mktemp("cd117"))


def test_finds_both_conv_pool_pairs_through_the_relu(conv_pool):
    _, analysis = conv_pool
    pairs = {p.conv: p for p in conv_pool_pairs(analysis)}
    assert pairs.keys() == {"conv1", "conv2"}  # plain -> dilated is conv -> conv: no pooling
    assert (pairs["conv1"].pool, pairs["conv1"].pool_class, pairs["conv1"].between) == ("pool1", "MaxPool2d", ("ReLU",))
    assert (pairs["conv2"].pool, pairs["conv2"].pool_class, pairs["conv2"].between) == ("pool2", "AvgPool2d", ())


def test_triggers_with_a_stride_2_candidate_at_a_quarter_of_the_flops(conv_pool):
    workload, analysis = conv_pool
    rule = StrideDilationRule()
    rule.max_rate_ratio = 0.0  # (b) off here: its own test below
    (finding,) = rule.check(analysis)
    assert finding.rule_id == "CD117" and set(finding.layers) == {"conv1", "conv2"}
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    assert evidence.forward_flops_per_step_strided * 4 == evidence.forward_flops_per_step
    conv1 = next(row for row in evidence.pairs if row.conv == "conv1")
    assert conv1.flops_per_call == 2 * 2 * 32 * 16 * 9 * 64 * 64
    assert finding.candidate.numerics is NumericsContract.ARCHITECTURE
    trial = finding.candidate.transform(workload.copy())
    assert trial.model.conv1.stride == (2, 2) and isinstance(trial.model.pool1, torch.nn.Identity)
    with torch.no_grad():
        assert trial.model(trial.inputs).shape == workload.model(workload.inputs).shape
    saved = sum(row.flops_per_call - row.flops_per_call_strided for row in evidence.pairs)
    assert model_cost(workload).flops - model_cost(trial).flops == saved
    assert workload.model.conv1.stride == (1, 1)  # the original is untouched


def test_does_not_trigger_without_pooling_or_dilation(tmp_path: Path):
    analysis = capture_analysis(load_workload(MODELS / "cd106_small_batch.py", device="cpu"), tmp_path)
    rule = StrideDilationRule()
    rule.min_share, rule.max_rate_ratio = 0.0, 1e9  # any pair or any dilated conv would fire
    assert analysis.layers and conv_pool_pairs(analysis) == [] and list(rule.check(analysis)) == []


@pytest.mark.parametrize("ratio, fires", [(1e9, True), (0.0, False)])
def test_dilated_conv_compared_with_the_undilated_ones_of_the_run(conv_pool, ratio: float, fires: bool):
    _, analysis = conv_pool
    rule = StrideDilationRule()
    rule.min_share = 1.01  # (a) off here
    rule.max_rate_ratio = ratio
    findings = list(rule.check(analysis))
    assert bool(findings) is fires
    if fires:
        (finding,) = findings
        (row,) = finding.evidence.slow_dilated
        layers = {layer.name: layer for layer in analysis.layers}
        assert row.name == "dilated" and row.dilation == [4, 4]
        assert row.gflops == pytest.approx(achieved_gflops(layers["dilated"]))
        assert finding.evidence.undilated_layers == 3 and finding.candidate is None


def test_profile_measures_the_strided_model(tmp_path: Path):
    from convdoctor.api import ProfileOptions, profile_file

    quick = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                              warmup_s=0, max_warmup_s=1.0, min_rounds=6, max_rounds=8, target_s=0.5)
    options = ProfileOptions(device="cpu", out_dir=tmp_path, select=("CD117",), steps=1, benchmark=quick)
    report, files = profile_file(MODELS / "cd117_conv_pool.py", options)
    outcome = next(o for o in report.outcomes if o.finding.candidate is not None)
    assert outcome.measurement is not None and outcome.architecture is not None
    assert outcome.architecture.flops_ratio < 0.5
    data = json.loads(files.json.read_text())
    jsonschema.validate(data, SCHEMA)
    entry = next(f for f in data["findings"] if f["candidate"])
    assert entry["architecture"]["needs_retraining"] is True and entry["measurement"]["rounds"] >= 6
    assert report.plan is None or all(step.finding.rule_id != "CD117" for step in report.plan.steps)
