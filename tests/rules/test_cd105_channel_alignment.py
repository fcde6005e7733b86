"""CD105 channel-alignment: fires on a 30-channel activation on this CPU (AVX2/AVX-512), measures the padded layer
alone and the whole model; silent on aligned channels and on the fp32 V100 trace (no fp32 tensor cores)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from conftest import EXAMPLES, MODELS, SCHEMA, SHARED_TRACES, capture_analysis, file_analysis
from torch import nn

from convdoctor.analyzer.candidates.candidate import NumericsContract
from convdoctor.analyzer.capture.workload import load_workload, workload_from
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.base import evidence_fields
from convdoctor.rules.cd105_channel_alignment import CPU_BLOCKS, ChannelAlignmentRule, channel_block, pad_channels

pytestmark = pytest.mark.usefixtures("one_thread")
CAPABILITY = torch.backends.cpu.get_cpu_capability()
needs_blocked_isa = pytest.mark.skipif(CAPABILITY not in CPU_BLOCKS, reason=f"this CPU's ISA is {CAPABILITY}")


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory):
    return file_analysis(MODELS / "cd105_odd_channels.py", tmp_path_factory.mktemp("cd105"))


def test_capture_records_the_cpu_isa(odd):
    _, analysis = odd
    assert analysis.profile.environment.cpu_capability == CAPABILITY
    block, why = channel_block(analysis, "float32")
    assert block == CPU_BLOCKS.get(CAPABILITY) and CAPABILITY in why


@needs_blocked_isa
def test_triggers_on_30_channels_and_exempts_the_rgb_stem(odd):
    _, analysis = odd
    rule = ChannelAlignmentRule()
    rule.min_share = 0.0  # layer shares of a CPU step are noisy; the shapes decide here
    (finding,) = rule.check(analysis)
    block = CPU_BLOCKS[CAPABILITY]
    assert finding.rule_id == "CD105" and finding.evidence.multiple == block
    assert set(finding.layers) == {"2", "4"}  # 32→30 and 30→32; the stem 3→32 is exempt
    rows = {row.name: row for row in finding.evidence.layers}
    assert (rows["2"].out_channels, rows["2"].out_channels_padded) == (30, 32)
    assert (rows["4"].in_channels, rows["4"].in_channels_padded) == (30, 32)
    json.dumps(evidence_fields(finding.evidence))
    candidate = finding.candidate
    assert candidate.numerics is NumericsContract.EXACT
    assert {t.layer for t in candidate.layer_trials} == {"2", "4"}
    assert dict((t.layer, t.input_shape) for t in candidate.layer_trials)["4"] == (2, 30, 56, 56)


def test_padding_keeps_outputs_and_gradients_on_a_copy(odd):
    workload, _ = odd
    padded = pad_channels(["2", "4"], 16)(workload.copy())
    assert padded.model[2].conv.weight.shape == (32, 32, 3, 3) and padded.model[4].conv.weight.shape == (32, 32, 3, 3)
    assert workload.model[2].out_channels == 30  # the original is untouched
    x = workload.inputs
    with torch.no_grad():
        torch.testing.assert_close(padded.model(x), workload.model(x), rtol=1e-4, atol=1e-5)
    train = workload_from(workload.model, x, device="cpu", mode="train")
    trial = pad_channels(["2"], 16)(train.copy())
    trial.model(x).sum().backward()
    assert trial.model[2].conv.weight.grad[30:].abs().max() == 0  # padded filters stay zero in training


def test_does_not_trigger_on_aligned_channels(tmp_path: Path):
    analysis = capture_analysis(load_workload(EXAMPLES / "seed_grouped.py", device="cpu", batch_size=1), tmp_path)
    rule = ChannelAlignmentRule()
    rule.min_share = 0.0
    assert analysis.layers and list(rule.check(analysis)) == []


def test_does_not_trigger_on_the_fp32_v100_trace():
    analysis = analyze_convs(load_profile(SHARED_TRACES["resnet50"]))
    block, why = channel_block(analysis, "float32")
    assert block is None and "no tensor-core path for float32" in why and "sm_70" in why
    rule = ChannelAlignmentRule()
    rule.min_share = 0.0
    assert list(rule.check(analysis)) == []


def test_padding_an_aligned_conv_keeps_its_shape():
    conv = nn.Conv2d(16, 32, 3)
    padded = pad_channels(["0"], 16)(workload_from(nn.Sequential(conv), torch.randn(1, 16, 8, 8), device="cpu"))
    assert padded.model[0].conv.weight.shape == (32, 16, 3, 3)


@needs_blocked_isa
def test_profile_measures_the_padded_layers_alone_and_the_model(tmp_path: Path):
    from convdoctor.api import ProfileOptions, profile_file
    from convdoctor.reports.terminal import render_summary

    quick = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                              warmup_s=0, max_warmup_s=1.0, min_rounds=6, max_rounds=8, target_s=0.5)
    options = ProfileOptions(device="cpu", out_dir=tmp_path, select=("CD105",), steps=1, benchmark=quick)
    report, files = profile_file(MODELS / "cd105_odd_channels.py", options)
    (outcome,) = report.outcomes  # each 30-channel layer is about a third of the step: far above min_share
    assert outcome.measurement is not None and outcome.numerics_ok  # exact: same outputs
    assert [m.layer for m in outcome.layer_measurements] == [t.layer for t in outcome.finding.candidate.layer_trials]
    for layer in outcome.layer_measurements:
        assert layer.measurement is not None and layer.measurement.numerics.max_rel_error <= 1e-4
        e = layer.measurement.estimate
        assert e.ci_low <= e.speedup <= e.ci_high  # faster, slower or no measurable difference: whatever it is
    data = json.loads(files.json.read_text())
    jsonschema.validate(data, SCHEMA)
    (entry,) = data["findings"]
    assert len(entry["layer_measurements"]) == len(outcome.layer_measurements)
    assert entry["layer_measurements"][0]["measurement"]["numerics_ok"] is True
    summary = render_summary(report, str(files.html), str(files.json), overwrote=False)
    assert "alone, input [2, " in summary and 'class="layer-trials"' in files.html.read_text()
