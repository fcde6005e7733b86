"""CD102 layout-ping-pong: triggers where conv layers disagree on the memory format, not where they all agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, capture_analysis

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.capture.workload import Workload, load_workload
from convdoctor.analyzer.conv.layers import ConvAnalysis, MemoryFormat
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd102_layout_ping_pong import LayoutPingPongRule

pytestmark = pytest.mark.usefixtures("one_thread")


def _analysis(workload: Workload, tmp_path: Path) -> ConvAnalysis:
    return capture_analysis(workload, tmp_path)


def test_triggers_on_a_contiguous_call_in_the_models_code(tmp_path: Path):
    workload = load_workload(MODELS / "layout_flip.py", device="cpu")
    analysis = _analysis(workload, tmp_path / "base")
    findings = list(LayoutPingPongRule().check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD102" and finding.rule_name == "layout-ping-pong"
    assert set(finding.layers) == {"conv_a", "conv_b"}
    evidence = finding.evidence
    assert evidence.layer_formats == {"conv_a": "channels_last", "conv_b": "contiguous"}
    assert evidence.format_flips == 1 and evidence.flips == [["conv_a", "conv_b"]]
    assert evidence.to_nchw_per_step == evidence.to_nhwc_per_step == 1
    directions = {(row.direction, row.module, row.tensor) for row in evidence.conversions}
    # the model's .contiguous() runs in Flip.forward; the copy back runs inside conv_b (channels_last weights)
    assert directions == {("NHWC->NCHW", "<model>", "activation"), ("NCHW->NHWC", "conv_b", "activation")}
    assert all(row.layer == "conv_b" and row.shape == [2, 16, 32, 32] and row.ms_per_step > 0
               for row in evidence.conversions)
    [source] = evidence.nchw_sources  # the module whose own code turns NHWC into NCHW, and the call that does
    assert {k: source[k] for k in ("module", "class", "calls", "in_model_code", "per_step")} == {
        "module": "<model>", "class": "Flip", "calls": ["aten::contiguous"], "in_model_code": True, "per_step": 1.0}
    assert 0 < source["ms_per_step"] < evidence.conversion_ms_per_step
    assert evidence.conversion_alone_removes_flips is False
    assert 0 < evidence.conversion_share < 1  # of the traced step; the estimate is of the unprofiled one
    assert finding.estimated_saving == pytest.approx(
        evidence.conversion_ms_per_step * 1e3 / analysis.unprofiled_step_us)
    assert "aten::contiguous in Flip.forward (<model>)" in finding.message
    assert "will not remove" in finding.advice  # honest: converting the model cannot drop the model's own copy
    assert finding.candidate is not None and finding.candidate.transform is to_channels_last
    assert finding.candidate.numerics is NumericsContract.EXACT
    fields = evidence_fields(finding.evidence)
    assert json.loads(json.dumps(fields)) == fields  # plain values, as the JSON report needs

    # ... and indeed: the candidate applied, the same flip is still there.
    converted = finding.candidate.transform(workload.copy())
    again = list(LayoutPingPongRule().check(_analysis(converted, tmp_path / "converted")))
    assert len(again) == 1 and again[0].evidence.flips == [["conv_a", "conv_b"]]


def test_triggers_on_weights_in_mixed_formats_and_the_candidate_removes_the_flips(tmp_path: Path):
    workload = load_workload(MODELS / "cd102_mixed_weights.py", device="cpu")
    findings = list(LayoutPingPongRule().check(_analysis(workload, tmp_path / "base")))
    assert len(findings) == 1
    finding = findings[0]
    evidence = finding.evidence
    assert evidence.layer_formats == {"0": "contiguous", "2": "contiguous", "4": "channels_last"}
    assert evidence.flips == [["2", "4"]] and set(finding.layers) == {"2", "4"}
    rows = {(row.layer, row.direction, row.tensor, row.module) for row in evidence.conversions}
    assert rows == {("2", "NCHW->NHWC", "activation", "2"), ("4", "NCHW->NHWC", "weight", "4")}
    assert evidence.nchw_sources == [] and evidence.conversion_alone_removes_flips is True
    assert "removes them" in finding.advice

    converted = finding.candidate.transform(workload.copy())
    analysis = _analysis(converted, tmp_path / "converted")
    assert {layer.memory_format for layer in analysis.layers} == {MemoryFormat.CHANNELS_LAST}
    assert list(LayoutPingPongRule().check(analysis)) == []
    with torch.no_grad():
        torch.testing.assert_close(converted.model(converted.inputs), workload.model(workload.inputs))


@pytest.mark.parametrize("model_file", [EXAMPLES / "small_cnn.py", MODELS / "already_channels_last.py"],
                         ids=["all-nchw", "all-channels-last"])
def test_does_not_trigger_when_every_layer_has_one_format(tmp_path: Path, model_file: Path):
    analysis = _analysis(load_workload(model_file, device="cpu"), tmp_path)
    assert len({layer.memory_format for layer in analysis.layers}) == 1
    assert list(LayoutPingPongRule().check(analysis)) == []


def test_a_one_channel_input_is_not_a_flip(tmp_path: Path):
    analysis = _analysis(load_workload(MODELS / "cd102_one_channel_input.py", device="cpu"), tmp_path)
    formats = {layer.name: layer.memory_format for layer in analysis.layers}
    # the analyzer calls a [N, 1, H, W] input contiguous (both fit); the rule must not read that as NCHW
    assert formats == {"0": MemoryFormat.CONTIGUOUS, "2": MemoryFormat.CHANNELS_LAST}
    assert list(LayoutPingPongRule().check(analysis)) == []


def test_options_thresholds(tmp_path: Path):
    analysis = _analysis(load_workload(MODELS / "layout_flip.py", device="cpu"), tmp_path)
    rule = LayoutPingPongRule()
    rule.warning_share = 0.0
    assert [f.severity for f in rule.check(analysis)] == [Severity.WARNING]
    rule.warning_share = 1.0
    assert [f.severity for f in rule.check(analysis)] == [Severity.INFO]
    rule.min_conversion_share = 1.0
    assert list(rule.check(analysis)) == []

