"""The layout probe: leaf modules timed alone in channels_last at capture, recorded in the trace, read by CD101."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, MODELS, capture_analysis
from torch import nn

from convdoctor.analyzer.capture.recording import record
from convdoctor.analyzer.capture.workload import load_workload, workload_from
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.conv.module_time import leaf_module_times
from convdoctor.analyzer.measure.layout_probe import time_leaf_layouts
from convdoctor.analyzer.trace.probe_record import LAYOUT_PROBE_KEY, recorded_probe
from convdoctor.analyzer.trace.profile import METADATA_KEY
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.base import SavingBound, evidence_fields
from convdoctor.rules.cd101_channels_last import ChannelsLastRule

pytestmark = pytest.mark.usefixtures("one_thread")


def _probed_analysis(workload, tmp_path: Path):
    probe = time_leaf_layouts(workload, rounds=3)
    traces = record(workload, tmp_path / "tb", "run", steps=2, layout_probe=probe).publish()
    return analyze_convs(load_profile(traces[0])), traces[0]


def test_probe_times_each_spatial_leaf_both_ways_and_leaves_the_workload_alone():
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu", mode="train")
    before = {name: p.detach().clone() for name, p in workload.model.named_parameters()}
    probe = time_leaf_layouts(workload, rounds=3)
    leaves = {name for name, m in workload.model.named_modules() if name and next(m.children(), None) is None}
    # every leaf that sees a 4-D activation: convs, BNs, ReLUs, the pool; not the Linear after the flatten
    assert {"stem.0", "stem.1", "stem.2", "layer1.0.conv1", "layer3.1.bn2", "pool"} <= set(probe) <= leaves
    assert "fc" not in probe
    assert all(t.current_us > 0 and t.channels_last_us > 0 for t in probe.values())
    assert all(torch.equal(p, before[name]) for name, p in workload.model.named_parameters())
    assert all(p.grad is None for p in workload.model.parameters())  # in-place ReLUs ran on clones, not leaves


def test_probe_skips_a_model_already_in_channels_last():
    workload = load_workload(MODELS / "already_channels_last.py", device="cpu")
    assert time_leaf_layouts(workload, rounds=3) == {}


class ToNchw(nn.Module):
    """A leaf that wants NCHW: free on an NCHW input, a full copy on an NHWC one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()


def test_probe_sees_a_layout_difference_in_the_right_direction():
    model = nn.Sequential(nn.Conv2d(8, 8, 1), ToNchw())
    probe = time_leaf_layouts(workload_from(model, torch.randn(8, 8, 128, 128), device="cpu"), rounds=5)
    assert set(probe) == {"0", "1"}
    assert probe["1"].ratio > 3, probe  # a 4 MiB copy against returning the tensor itself


def test_probe_is_recorded_in_the_trace_and_read_back_by_name(tmp_path: Path):
    model = nn.Sequential()
    model.add_module('odd "name" é', nn.Conv2d(3, 8, 3))  # quotes and non-ASCII survive Kineto's metadata
    model.add_module("bn", nn.BatchNorm2d(8))
    workload = workload_from(model, torch.randn(2, 3, 16, 16), device="cpu")
    analysis, trace = _probed_analysis(workload, tmp_path)
    probe = recorded_probe(analysis.profile)
    assert set(probe) == {'odd "name" é', "bn"}
    times = leaf_module_times(analysis.profile, analysis.time_basis)
    assert set(times) == {'odd "name" é', "bn"} and times["bn"].class_name == "BatchNorm2d"
    raw = json.loads(Path(trace).read_text())[METADATA_KEY][LAYOUT_PROBE_KEY]
    assert len(raw) == 2 and all(len(v) == 2 for v in raw.values())


def test_broken_probe_entries_are_left_out(tmp_path: Path):
    workload = workload_from(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), torch.randn(2, 3, 16, 16), device="cpu")
    _, trace = _probed_analysis(workload, tmp_path)
    data = json.loads(Path(trace).read_text())
    entries = data[METADATA_KEY][LAYOUT_PROBE_KEY]
    conv_key, relu_key = sorted(entries)
    entries[conv_key] = [1.0, float("nan")]  # NaN, a string, a wrong length, a key that is no scope name
    entries[relu_key] = ["12", 3.0]
    entries["not a scope"] = [1.0, 2.0]
    data[METADATA_KEY][LAYOUT_PROBE_KEY] = entries
    broken = tmp_path / "broken.pt.trace.json"
    broken.write_text(json.dumps(data))
    assert recorded_probe(load_profile(broken)) == {}
    data[METADATA_KEY][LAYOUT_PROBE_KEY] = "a string"
    broken.write_text(json.dumps(data))
    assert recorded_probe(load_profile(broken)) == {}


def test_leaf_times_charge_backward_by_sequence_number(tmp_path: Path):
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu", mode="train")
    analysis = capture_analysis(workload, tmp_path, steps=2)
    times = leaf_module_times(analysis.profile, analysis.time_basis)
    for layer in analysis.layers:  # a conv module's time is its conv layer's, forward and backward
        module = times[layer.name]
        steps = analysis.profile.step_count
        assert module.forward_us == pytest.approx(layer.forward_us / steps, rel=0.05)
        # the layer counts the ConvolutionBackward0 node; the module the engine's event around it, a little more
        assert layer.backward_us / steps <= module.backward_us <= 1.2 * layer.backward_us / steps
    assert all(t.backward_us > 0 for name, t in times.items() if ".bn" in name)  # BN backward found too
    assert sum(t.time_us for t in times.values()) <= analysis.step_time_us


def test_cd101_predicts_the_whole_effect_with_a_probe_and_only_copies_without(tmp_path: Path):
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu")
    probed, _ = _probed_analysis(workload, tmp_path / "probed")
    (finding,) = ChannelsLastRule().check(probed)
    assert finding.saving_bound is SavingBound.ESTIMATE and finding.estimated_saving is not None
    evidence = finding.evidence.layout_probe
    assert evidence is not None and evidence.probed_modules >= 15 + 15  # every conv and every BN
    by_class = evidence.by_module_class
    assert {"Conv2d", "BatchNorm2d"} <= set(by_class)
    total = sum(row.predicted_saving_ms_per_step for row in by_class.values())
    # over the step timed without the profiler (recorded at capture), not the traced step
    assert finding.estimated_saving == pytest.approx(total * 1e3 / probed.unprofiled_step_us)
    assert evidence.predicted_share == finding.estimated_saving
    assert "timed alone in channels_last" in finding.message

    plain = capture_analysis(workload, tmp_path / "plain")
    (unprobed,) = ChannelsLastRule().check(plain)
    assert unprobed.evidence.layout_probe is None and unprobed.estimated_saving is None
    assert "layout_probe" not in evidence_fields(unprobed.evidence)


def test_profile_probes_only_for_a_rule_that_reads_the_probe():
    from convdoctor.rules.base import Probe, wanted_probes
    from convdoctor.rules.registry import load_rules, select_rules

    rules = load_rules().rules
    assert Probe.LAYOUT in wanted_probes(rules)
    assert wanted_probes(select_rules(rules, ("CD109", "CD116"), ())) == frozenset()
    assert wanted_probes(select_rules(rules, (), ("CD101",))) == frozenset()


def test_cd101_counts_backward_conversions_once_in_training(tmp_path: Path):
    # small_cnn's training step on this CPU converts layouts inside the conv backward nodes (copy_ between NHWC and
    # NCHW, charged to the layers): they are in the modules' backward time, so not added again as "outside"
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu", mode="train")
    analysis, _ = _probed_analysis(workload, tmp_path)
    (finding,) = ChannelsLastRule().check(analysis)
    assert finding.evidence.layout_probe is not None
    assert finding.evidence.layout_probe.conversions_outside_probed_ms_per_step == 0
    backward = [c for layer in analysis.layers for c in layer.conversions if c.op_module is None]
    backward_us_per_step = sum(c.dur_us for c in backward) / analysis.profile.step_count
    assert backward_us_per_step > 0  # there were backward copies to count twice
    # all the layers' conversions include the backward ones (up to the order of the float sums)
    assert finding.evidence.conversion_ms_per_step * 1e3 >= backward_us_per_step * (1 - 1e-9)
