"""CD111 low-occupancy on the real ResNet-50 V100 trace.

Under the default options it triggers on the three 3x3 64->64 convs of layer1: a third of their kernel time is
the weight-gradient GEMM `volta_sgemm_128x32_nt`, launched with 72 blocks on 80 SMs (0.9 blocks per SM). No layer
is below the default 10% occupancy (cuDNN's fp32 kernels run at 19-50% theoretical occupancy by design); a
stricter `max_occupancy_pct` reports more layers.
"""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_TRACES

from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.profile import EventKind
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.base import evidence_fields
from convdoctor.rules.cd111_low_occupancy import LowOccupancyRule
from convdoctor.rules.registry import run_rules


@pytest.fixture(scope="module")
def resnet50():
    return analyze_convs(load_profile(SHARED_TRACES["resnet50"]))


def test_triggers_on_underfilled_weight_gradient_launches(resnet50):
    findings = list(LowOccupancyRule().check(resnet50))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD111" and finding.rule_name == "low-occupancy"
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    by_name = {layer.name: layer for layer in resnet50.layers}
    assert len(finding.layers) == 3
    assert all(by_name[name].weight_shape == [64, 64, 3, 3] for name in finding.layers)
    assert evidence.num_sms == 80 and evidence.device == 0
    assert evidence.checked_layers == 53 and evidence.layers_without_occupancy == []
    assert 0.01 <= evidence.flagged_share < 0.1
    for item in evidence.layers:
        assert 0.25 <= item.underfilled_share < 1
        assert 0 < item.min_blocks_per_sm < 1
        assert 10 <= item.occupancy_pct <= 100
        assert item.kernel_ms_per_step <= item.layer_ms_per_step + 1e-9
        underfilled = [k for k in item.kernels if k.blocks_per_sm < 1]
        assert underfilled and all(0 <= k.occupancy_pct <= 100 for k in item.kernels)
        assert "volta_sgemm_128x32_nt" in {k.name for k in underfilled}
    assert "80 SMs" in finding.message and "blocks/SM" in finding.message
    assert "cudnn.benchmark" in finding.advice and "batch" in finding.advice
    assert finding.candidate is None and finding.estimated_saving is None


def test_stricter_occupancy_threshold_reports_more_layers(resnet50):
    rule = LowOccupancyRule()
    rule.max_occupancy_pct = 30.0
    (finding,) = rule.check(resnet50)
    assert len(finding.layers) > 3
    assert all(item.occupancy_pct < 30.0 or item.underfilled_share >= 0.25
               for item in finding.evidence.layers)


@pytest.mark.parametrize("option, value", [("min_underfilled_share", 1.01), ("min_share", 0.5)])
def test_does_not_trigger_with_looser_thresholds(resnet50, option: str, value: float):
    rule = LowOccupancyRule()
    setattr(rule, option, value)
    assert list(rule.check(resnet50)) == []


def _strip_occupancy(analysis, names):
    """Remove the occupancy estimate from the kernels of the named layers, as older Kineto versions write them."""
    layers = {layer.name: layer for layer in analysis.layers}
    saved = [(k, k.est_occupancy_pct) for name in names for k in layers[name].kernels if k.kind is EventKind.KERNEL]
    for k, _ in saved:
        k.est_occupancy_pct = None
    return saved


def _restore(saved):
    for k, value in saved:
        k.est_occupancy_pct = value


def test_layers_without_occupancy_fields_are_not_judged(resnet50):
    """A layer whose kernels carry no occupancy estimate is left out and named in the evidence, never flagged."""
    flagged = sorted(next(iter(LowOccupancyRule().check(resnet50))).layers)
    stem = next(layer.name for layer in resnet50.layers if layer.weight_shape == [64, 3, 7, 7])
    saved = _strip_occupancy(resnet50, [flagged[0], stem])
    try:
        (finding,) = LowOccupancyRule().check(resnet50)
    finally:
        _restore(saved)
    assert sorted(finding.layers) == flagged[1:]
    assert sorted(finding.evidence.layers_without_occupancy) == sorted([flagged[0], stem])
    assert finding.evidence.checked_layers == 51
    assert "2 layer(s)" in finding.evidence.note


def test_no_finding_when_no_kernel_has_occupancy_fields(resnet50):
    saved = _strip_occupancy(resnet50, [layer.name for layer in resnet50.layers])
    try:
        assert list(LowOccupancyRule().check(resnet50)) == []
    finally:
        _restore(saved)


def test_layer_kernels_match_the_layer_time(resnet50):
    """A layer's kernels, cuDNN's transposes among them, are its time: each transpose counted once, as a conversion
    (not also in the forward or backward time); host conversions are the rest."""
    steps = resnet50.profile.step_count
    for layer in resnet50.layers:
        device_us = sum(k.dur_us for k in layer.kernels) / steps
        host_us = sum(c.dur_us for c in layer.conversions if c.source == "cpu_op") / steps
        assert device_us == pytest.approx(layer.time_per_step_us - host_us)


def test_skipped_on_a_trace_without_cuda_kernels():
    analysis = analyze_convs(load_profile(SHARED_TRACES["cpu_only"]))
    results = run_rules([LowOccupancyRule()], analysis)
    assert results.findings == []
    assert "trace has no CUDA kernels" in results.skipped["CD111"]
