"""CD121 conv-slow-path: on real CPU captures, float16 convs (thnn_conv2d, slow_conv_dilated2d), float64 convs and
float32 convs with oneDNN turned off trigger it; float32 Conv2d (a ResNet-like model) and an NCDHW Conv3d, which
torch 2.13 runs in oneDNN, do not. The float32 and oneDNN candidates move the convs onto mkldnn_convolution."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, capture_analysis
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from convdoctor.analyzer.candidates.candidate import NumericsContract, PlanStage
from convdoctor.analyzer.capture.workload import load_workload, make_step, workload_from
from convdoctor.analyzer.measure.benchmark import compare_first_step
from convdoctor.rules.base import SavingBound
from convdoctor.rules.cd121_conv_slow_path import FLOAT32_TOLERANCE, SLOW_CONV_OPS, ConvSlowPathRule


@pytest.fixture(scope="module")
def half(tmp_path_factory):
    workload = load_workload(MODELS / "cd121_half_cnn.py", device="cpu")
    return workload, capture_analysis(workload, tmp_path_factory.mktemp("half"))


def _conv_ops(workload) -> set[str]:
    step = make_step(workload.copy())
    step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {e.name for e in prof.events() if "conv" in e.name}


def test_triggers_on_float16_convs(half):
    _, analysis = half
    (finding,) = ConvSlowPathRule().check(analysis)
    assert finding.rule_id == "CD121" and finding.rule_name == "conv-slow-path"
    assert set(finding.layers) == {"0", "2", "4"}
    evidence = finding.evidence
    json.dumps(asdict(evidence))
    by_layer = {layer.layer: layer for layer in evidence.layers}
    assert by_layer["0"].implementation == "aten::_slow_conv2d_forward"  # thnn_conv2d -> _slow_conv2d_forward
    assert by_layer["2"].implementation == "aten::slow_conv_dilated2d"
    assert {layer.dtype for layer in evidence.layers} == {"float16"}
    assert evidence.cause == "dtype" and evidence.mkldnn_enabled is True
    assert evidence.mkldnn_fp16_supported is torch.ops.mkldnn._is_mkldnn_fp16_supported()
    assert 0.1 < evidence.slow_share <= 1
    assert "reference path" in finding.message and "float16" in finding.message
    assert finding.saving_bound is SavingBound.AT_MOST and 0 < finding.estimated_saving <= 1
    candidate = finding.candidate
    assert candidate.numerics is NumericsContract.APPROXIMATE and candidate.tolerance == FLOAT32_TOLERANCE
    assert candidate.stage is PlanStage.STRUCTURE


def test_the_float32_candidate_runs_onednn_within_tolerance(half):
    workload, analysis = half
    (finding,) = ConvSlowPathRule().check(analysis)
    trial = finding.candidate.transform(workload.copy())
    ops = _conv_ops(trial)
    assert "aten::mkldnn_convolution" in ops and not ops & SLOW_CONV_OPS
    numerics, _ = compare_first_step(workload, trial)
    assert numerics.within(FLOAT32_TOLERANCE)
    with torch.no_grad():
        assert trial.model(workload.inputs).dtype is torch.float16  # the caller's dtype is kept


def test_quiet_on_a_float32_resnet_like_model(tmp_path: Path):
    analysis = capture_analysis(load_workload(EXAMPLES / "small_cnn.py", device="cpu"), tmp_path)
    assert len(analysis.layers) == 15
    assert all(layer.implementations == ["aten::mkldnn_convolution"] for layer in analysis.layers)
    assert list(ConvSlowPathRule().check(analysis)) == []


def test_quiet_on_an_ncdhw_conv3d(tmp_path: Path):
    analysis = capture_analysis(load_workload(MODELS / "cd121_conv3d_ncdhw.py", device="cpu"), tmp_path)
    assert [layer.op for layer in analysis.layers] == ["conv3d", "conv3d"]
    assert all(layer.implementations == ["aten::mkldnn_convolution"] for layer in analysis.layers)
    assert list(ConvSlowPathRule().check(analysis)) == []


def test_float64_is_flagged_without_a_candidate(tmp_path: Path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1)).double()
    analysis = capture_analysis(workload_from(model, torch.randn(1, 2, 4, 8, 8).double(), device="cpu"), tmp_path)
    (finding,) = ConvSlowPathRule().check(analysis)
    assert finding.evidence.cause == "float64" and finding.candidate is None
    assert finding.evidence.layers[0].implementation == "aten::slow_conv3d_forward"


def test_onednn_turned_off(tmp_path: Path):
    torch.manual_seed(0)
    workload = workload_from(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1)), torch.randn(2, 3, 16, 16),
                             device="cpu")
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        (finding,) = ConvSlowPathRule().check(capture_analysis(workload, tmp_path))
        assert finding.evidence.cause == "mkldnn disabled" and finding.evidence.mkldnn_enabled is False
        assert {layer.dtype for layer in finding.evidence.layers} == {"float32"}
        trial = finding.candidate.transform(workload.copy())
        assert "aten::mkldnn_convolution" in _conv_ops(trial)  # on for the candidate's forward...
        assert torch.backends.mkldnn.enabled is False  # ...and back after it
        numerics, _ = compare_first_step(workload, trial)
        assert numerics.within(finding.candidate.tolerance)
    finally:
        torch.backends.mkldnn.enabled = enabled
