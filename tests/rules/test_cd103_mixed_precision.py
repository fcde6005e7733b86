"""CD103 mixed-precision: triggers on the real fp32 ResNet-50 trace from a V100 (sm_70: float16), is skipped on a
CPU trace recorded here, and its candidate runs a CPU workload under bfloat16 autocast within its tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, SHARED_TRACES, capture_analysis

from convdoctor.analyzer.candidates.candidate import NumericsContract, PlanStage
from convdoctor.analyzer.candidates.torch_parts import Autocast
from convdoctor.analyzer.capture.workload import load_workload, workload_from
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.measure.benchmark import compare_first_step
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.base import evidence_fields
from convdoctor.rules.cd103_mixed_precision import MixedPrecisionRule, mixed_precision_dtype
from convdoctor.rules.registry import run_rules


@pytest.fixture(scope="module")
def resnet50():
    return analyze_convs(load_profile(SHARED_TRACES["resnet50"]))


@pytest.fixture(scope="module")
def v100_finding(resnet50):
    findings = list(MixedPrecisionRule().check(resnet50))
    assert len(findings) == 1
    return findings[0]


def test_triggers_on_fp32_convs_on_a_v100(resnet50, v100_finding):
    finding = v100_finding
    assert finding.rule_id == "CD103" and finding.rule_name == "mixed-precision"
    assert set(finding.layers) == {layer.name for layer in resnet50.layers} and len(finding.layers) == 53
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    assert evidence.fp32_layers == evidence.conv_layers == 53
    assert evidence.device == 0 and evidence.device_name.startswith("Tesla V100")
    assert evidence.compute_capability == "7.0" and evidence.suggested_dtype == "float16"
    assert evidence.training is True
    assert 0.1 < evidence.fp32_conv_share < 1.0
    assert evidence.fp32_conv_ms_per_step == pytest.approx(resnet50.conv_time_us / 1e3)
    assert "V100" in finding.message and f"{evidence.fp32_conv_share:.0%}" in finding.message
    assert "torch.autocast" in finding.advice and "GradScaler" in finding.advice and "TF32" in finding.advice
    assert "GradScaler" in finding.snippet and "torch.float16" in finding.snippet
    assert finding.estimated_saving is None
    candidate = finding.candidate
    assert candidate is not None and candidate.numerics is NumericsContract.APPROXIMATE
    assert candidate.tolerance == 2e-2
    assert candidate.stage is PlanStage.WRAPPER


def test_min_share_option(resnet50, v100_finding):
    rule = MixedPrecisionRule()
    rule.min_share = v100_finding.evidence.fp32_conv_share + 0.01
    assert list(rule.check(resnet50)) == []


def test_skipped_on_a_cpu_trace(tmp_path: Path):
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu")
    analysis = capture_analysis(workload, tmp_path)
    assert analysis.layers  # there are conv layers; what is missing is the GPU
    results = run_rules([MixedPrecisionRule()], analysis)
    assert results.findings == []
    assert results.skipped == {"CD103": "trace has no CUDA kernels"}


def test_candidate_runs_a_cpu_workload_under_bfloat16_within_tolerance(v100_finding):
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu")
    trial = v100_finding.candidate.transform(workload.copy())
    # the trace said float16 (sm_70), but the dtype is the workload's device's: CPU autocast runs bfloat16
    assert isinstance(trial.model, Autocast) and trial.model.dtype is torch.bfloat16
    assert trial.model.device_type == "cpu"
    assert not isinstance(workload.model, Autocast)  # the original is left as it was
    numerics, _ = compare_first_step(workload, trial)
    assert 0 < numerics.max_rel_error <= v100_finding.candidate.tolerance  # bfloat16 does change the numbers


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the capability is read from the device")
def test_dtype_falls_back_to_the_traces_capability_without_cuda():
    assert mixed_precision_dtype(torch.device("cuda"), 7) is torch.float16
    assert mixed_precision_dtype(torch.device("cuda"), 8) is torch.bfloat16
    assert mixed_precision_dtype(torch.device("cuda"), None) is torch.float16
    assert mixed_precision_dtype(torch.device("cpu"), 7) is torch.bfloat16


def test_no_tf32_candidate_on_a_v100(resnet50):
    findings = list(MixedPrecisionRule().check(resnet50))
    assert [f.fix for f in findings] == [findings[0].fix] and "TF32" not in findings[0].fix  # sm_70: no TF32


def test_tf32_candidate_for_sm80_when_the_switches_are_not_recorded(resnet50):
    """The TF32 finding's decision on the real V100 trace's facts, as if its GPU were sm_80 (no sm_80 conv trace
    is available): the trace records neither switch, so both count as not known to be on."""
    layers = [layer.name for layer in resnet50.layers]
    finding = MixedPrecisionRule().tf32_finding(resnet50, layers, 0.5, "A100", "8.0")
    assert finding is not None and finding.evidence.cudnn_allow_tf32 is None
    assert finding.candidate.numerics is NumericsContract.APPROXIMATE and finding.candidate.stage is PlanStage.WRAPPER
    assert "cudnn_allow_tf32=unknown" in finding.message and "allow_tf32 = True" in finding.snippet
    wrapped = finding.candidate.transform(workload_from(torch.nn.Linear(2, 2), torch.ones(1, 2), device="cpu"))
    assert wrapped.model.flags == {"cudnn_allow_tf32": True, "matmul_allow_tf32": True}
