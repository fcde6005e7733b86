"""CD114 inefficient-depthwise: triggers on the seed's NCHW depthwise conv against its dense pointwise conv, proposes
CD101's channels_last candidate, and says why there is none once the model runs in channels_last; not on a dense
model nor on a compute-bound grouped conv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, capture_analysis
from torch import nn

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.capture.workload import Workload, load_workload, workload_from
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd114_inefficient_depthwise import InefficientDepthwiseRule, achieved_gflops

PIXELS = 224 * 224
DEPTHWISE_INTENSITY = 2 * 64 * 9 * PIXELS / ((2 * 64 * PIXELS + 64 * 9 + 64) * 4)  # ≈ 2.25 FLOP/byte
POINTWISE_INTENSITY = 2 * 128 * 64 * PIXELS / ((64 * PIXELS + 128 * 64 + 128 * PIXELS + 128) * 4)  # ≈ 21.3


pytestmark = pytest.mark.usefixtures("one_thread")


def _analysis(workload: Workload, tmp_path: Path) -> ConvAnalysis:
    return capture_analysis(workload, tmp_path)


@pytest.fixture(scope="module")
def separable() -> Workload:
    return load_workload(EXAMPLES / "seed_separable.py", device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def separable_nchw(separable, tmp_path_factory: pytest.TempPathFactory) -> ConvAnalysis:
    """One capture of examples/seed_separable.py as it is: depthwise 3×3 then pointwise 1×1, NCHW, in eval."""
    return _analysis(separable, tmp_path_factory.mktemp("cd114_seed"))


def test_triggers_on_the_nchw_depthwise_seed(separable_nchw):
    findings = list(InefficientDepthwiseRule().check(separable_nchw))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD114" and finding.rule_name == "inefficient-depthwise"
    assert finding.layers == ["depthwise"]  # the pointwise conv is the dense reference, not a finding
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    (row,) = evidence.layers
    assert row.groups == 64 and row.depthwise and row.memory_format == "contiguous"
    assert row.intensity == pytest.approx(DEPTHWISE_INTENSITY)
    reference = evidence.reference
    assert reference.kind == "dense conv" and reference.name == "pointwise"
    assert reference.intensity == pytest.approx(POINTWISE_INTENSITY)
    assert row.intensity_ratio < 0.2
    assert 0 < row.gflops < 0.5 * reference.gflops  # far below the dense conv: it waits on memory
    assert row.throughput_ratio == pytest.approx(row.gflops / reference.gflops)
    assert 0.05 <= row.share < 1.0 and evidence.share == row.share
    assert "depthwise: depthwise 3×3 conv at 2.25 FLOP/byte" in finding.message and "pointwise" in finding.message
    assert "channels_last" in finding.advice and "torch.compile" in finding.advice and "FLOPs" in finding.advice
    assert finding.severity is Severity.WARNING and finding.estimated_saving is None
    candidate = finding.candidate
    assert candidate is not None and candidate.transform is to_channels_last  # CD101's, reused
    assert candidate.numerics is NumericsContract.EXACT and evidence.no_candidate is None


def test_in_channels_last_it_still_reports_but_proposes_nothing(separable, tmp_path: Path):
    """What is true on CPU: NHWC depthwise kernels are faster, but still memory-bound and well below the 1×1
    conv's GFLOP/s. The throughput gate is opened to 1.0 so that the test does not depend on how far below."""
    analysis = _analysis(to_channels_last(separable.copy()), tmp_path)
    rule = InefficientDepthwiseRule()
    rule.max_throughput_ratio = 1.0
    (finding,) = rule.check(analysis)
    (row,) = finding.evidence.layers
    assert finding.layers == ["depthwise"] and row.memory_format == "channels_last"
    assert row.throughput_ratio < 1.0 and row.intensity_ratio < 0.2
    assert finding.candidate is None and finding.severity is Severity.INFO
    assert finding.evidence.nchw_layers == 0
    assert "already run in channels_last" in finding.evidence.no_candidate
    assert finding.evidence.no_candidate in finding.advice


def test_without_a_dense_conv_the_intensity_threshold_decides(tmp_path: Path):
    workload = workload_from(nn.Conv2d(32, 32, 3, padding=1, groups=32), torch.randn(1, 32, 112, 112), device="cpu")
    analysis = _analysis(workload, tmp_path)
    (finding,) = InefficientDepthwiseRule().check(analysis)
    assert finding.layers == ["<model>"]
    assert evidence_fields(finding.evidence)["reference"] == {"kind": "threshold", "max_intensity": 10.0}
    (row,) = finding.evidence.layers
    assert row.intensity < 2.5 and row.throughput_ratio is None and row.gflops > 0
    assert "no dense conv" in finding.message
    strict = InefficientDepthwiseRule()
    strict.max_intensity = 2.0  # FLOP/byte: the depthwise conv's ≈2.2 is over it
    assert list(strict.check(analysis)) == []


def test_does_not_trigger_on_a_dense_conv(tmp_path: Path):
    analysis = _analysis(load_workload(EXAMPLES / "seed_conv.py", device="cpu"), tmp_path)
    assert [layer.groups for layer in analysis.layers] == [1]
    assert achieved_gflops(analysis.layers[0]) > 0
    assert list(InefficientDepthwiseRule().check(analysis)) == []


def test_does_not_trigger_on_a_compute_bound_grouped_conv(tmp_path: Path):
    analysis = _analysis(load_workload(EXAMPLES / "seed_grouped.py", device="cpu"), tmp_path)
    (layer,) = analysis.layers
    assert layer.groups == 4 and layer.intensity > 40  # 16 channels per group: ~48 FLOP/byte
    assert list(InefficientDepthwiseRule().check(analysis)) == []


@pytest.mark.parametrize("min_share, expected", [(0.0, 1), (1.01, 0)])
def test_min_share_option(separable_nchw, min_share: float, expected: int):
    rule = InefficientDepthwiseRule()
    rule.min_share = min_share
    assert len(list(rule.check(separable_nchw))) == expected
