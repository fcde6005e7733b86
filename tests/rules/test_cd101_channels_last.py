"""CD101 channels-last: triggers on NCHW convs and on layout conversions, not on a model already in NHWC."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, capture_analysis

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.rules.cd101_channels_last import ChannelsLastRule


def _findings(model_file: Path, tmp_path: Path):
    workload = load_workload(model_file, device="cpu")
    analysis = capture_analysis(workload, tmp_path)
    return workload, analysis, list(ChannelsLastRule().check(analysis))


def test_triggers_on_nchw_convs(tmp_path: Path):
    _, analysis, findings = _findings(EXAMPLES / "small_cnn.py", tmp_path)
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD101" and finding.rule_name == "channels-last"
    assert set(finding.layers) == {layer.name for layer in analysis.layers}
    assert "layer1.0.conv1" in finding.layers
    assert finding.evidence.nchw_layers == finding.evidence.spatial_conv_layers == 15
    assert 0.3 < finding.evidence.affected_share <= 1.0
    assert finding.estimated_saving is None  # no conversions: the trace bounds no saving, so none is claimed
    assert finding.candidate is not None and finding.candidate.numerics is NumericsContract.EXACT


def test_triggers_on_layout_conversions(tmp_path: Path):
    _, _, findings = _findings(MODELS / "layout_flip.py", tmp_path)
    assert len(findings) == 1
    evidence = findings[0].evidence
    assert evidence.conversions == ["aten::copy_"]
    assert evidence.conversion_ms_per_step > 0
    assert findings[0].layers == ["conv_b"]  # conv_a runs in NHWC and converts nothing
    assert findings[0].estimated_saving is not None and 0 < findings[0].estimated_saving < 1


def test_does_not_trigger_when_everything_is_channels_last(tmp_path: Path):
    _, analysis, findings = _findings(MODELS / "already_channels_last.py", tmp_path)
    assert len(analysis.layers) == 2
    assert findings == []


def test_candidate_converts_a_copy_and_leaves_the_original(tmp_path: Path):
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu")
    converted = to_channels_last(workload.copy())
    conv = converted.model.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert converted.inputs.is_contiguous(memory_format=torch.channels_last)
    assert workload.model.stem[0].weight.is_contiguous()
    assert workload.inputs.is_contiguous()


def test_candidate_handles_3d_convs():
    from convdoctor.analyzer.capture.workload import workload_from

    workload = workload_from(torch.nn.Conv3d(2, 4, 3), torch.randn(1, 2, 4, 8, 8), device="cpu")
    converted = to_channels_last(workload.copy())
    assert converted.model.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert converted.inputs.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        torch.testing.assert_close(converted.model(converted.inputs), workload.model(workload.inputs))


@pytest.mark.parametrize("threshold, expected", [(0.0, 1), (1.01, 0)])
def test_min_share_option(tmp_path: Path, threshold: float, expected: int):
    workload = load_workload(EXAMPLES / "seed_conv.py", device="cpu")
    analysis = capture_analysis(workload, tmp_path)
    rule = ChannelsLastRule()
    rule.min_share = threshold
    assert len(list(rule.check(analysis))) == expected
