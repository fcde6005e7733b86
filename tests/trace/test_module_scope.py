"""Module scope names survive Kineto's unescaped JSON: any module name round-trips through a real trace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from convdoctor.analyzer.capture.recording import capture
from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.module_scope import ROOT_NAME, parse_scope_name, scope_name
from convdoctor.analyzer.trace.reader import load_profile

NAMES = ['x" onerror="alert(1)', "100%", "back\\slash", "tab\there", "aéb_слой_层", "<script>alert(1)</script>",
         "layer1.0.conv2"]


@pytest.mark.parametrize("name", NAMES)
def test_scope_names_round_trip(name: str):
    scope = parse_scope_name(scope_name(name, "Conv2d"))
    assert scope is not None and scope.qualified_name == name and scope.class_name == "Conv2d"
    assert '"' not in scope_name(name, "Conv2d") and "\\" not in scope_name(name, "Conv2d")


def test_root_and_foreign_names():
    assert parse_scope_name(scope_name("", "ResNet")).qualified_name == ROOT_NAME
    assert parse_scope_name("ProfilerStep#3") is None
    assert parse_scope_name("module::") is None


def test_hostile_module_names_survive_a_real_capture(tmp_path: Path):
    model = nn.Sequential()
    for name in NAMES[:5]:
        model.add_module(name, nn.Conv2d(3, 3, 3, padding=1))
    workload = workload_from(model, torch.randn(1, 3, 8, 8), device="cpu")
    analysis = analyze_convs(load_profile(capture(workload, tmp_path, "run", steps=1)[0]))
    assert {layer.name for layer in analysis.layers} == set(NAMES[:5])


def test_a_model_file_path_with_a_quote_and_accents_keeps_the_trace_valid(tmp_path: Path):
    """Kineto writes the recorded environment into the trace unescaped: a '"' in the path must not break it."""
    import shutil

    from conftest import EXAMPLES

    from convdoctor.analyzer.capture.workload import load_workload

    folder = tmp_path / 'we"ird é'
    folder.mkdir()
    shutil.copy(EXAMPLES / "seed_grouped.py", folder / "model.py")
    workload = load_workload(folder / "model.py", device="cpu", batch_size=1)
    profile = load_profile(capture(workload, tmp_path / "tb", "run", steps=1)[0])
    assert profile.environment.model_file == str(folder / "model.py").replace('"', "")
    assert "é" in profile.environment.model_file


def test_pytorch_module_events_name_the_layers_of_a_trace_captured_elsewhere(tmp_path: Path):
    """A trace recorded by plain torch.profiler with with_stack=True (no convdoctor scopes) carries PyTorch's
    `nn.Module: Conv2d_1` events: they name the layers, and the fold rule finds each conv's BatchNorm."""
    from torch.profiler import ProfilerActivity, profile

    from convdoctor.rules.cd109_conv_bn_fold import ConvBnFoldRule

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16))).eval()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], with_stack=True, with_modules=True,
                                  record_shapes=True) as prof:
        model(torch.randn(2, 3, 16, 16))
    trace = tmp_path / "elsewhere.pt.trace.json"
    prof.export_chrome_trace(str(trace))
    analysis = analyze_convs(load_profile(trace))
    shapes = {layer.name: layer.weight_shape for layer in analysis.layers}
    assert shapes == {"Conv2d_0": [8, 3, 3, 3], "Conv2d_1": [16, 8, 3, 3]}
    assert {layer.module_class for layer in analysis.layers} == {"Conv2d"}
    assert parse_scope_name("nn.Module: BatchNorm2d_12").class_name == "BatchNorm2d"
    (finding,) = ConvBnFoldRule().check(analysis)
    assert "Conv2d_0 -> BatchNorm2d_0" in finding.message
