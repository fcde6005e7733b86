"""The compiled view of real compiled-model traces (tests/data, captured by convdoctor from examples/small_cnn.py):
each conv layer's extern call and Inductor's generated kernels, checked against the raw trace JSON and the model's
own modules; reading them needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from conftest import DATA, check_small_cnn_compiled_view, raw_graph_calls, small_cnn_modules

from convdoctor.analyzer.conv.compiled import ORDER_AND_SHAPES, PROVENANCE, compiled_view
from convdoctor.analyzer.trace.reader import load_profile

PROVENANCE_TRACE = DATA / "small_cnn_compiled_cpu.pt.trace.json.gz"  # profile --compiled: no freezing
FROZEN_TRACE = DATA / "small_cnn_frozen_compiled_cpu.pt.trace.json.gz"  # a model file compiling with freezing


def test_profile_compiled_attributes_each_conv_and_its_fused_batch_norm():
    view = check_small_cnn_compiled_view(PROVENANCE_TRACE)
    assert view.step_ratio is not None and view.compile_s > 0 and view.notes == ()


def test_frozen_compile_matches_fused_onednn_convs_by_order_and_shapes():
    """Freezing folds every BatchNorm and fuses the convs with their ReLU and adds (mkldnn::_convolution_pointwise);
    Inductor's provenance names the wrong nodes for those calls, so they are matched to the eager convs by shapes:
    each layer's call has its module's weight shape and stride, read from the raw trace."""
    view = compiled_view(load_profile(FROZEN_TRACE))
    modules = small_cnn_modules()
    convs = {name: m for name, m in modules.items() if type(m).__name__ == "Conv2d"}
    assert sorted(layer.name for layer in view.layers) == sorted(convs)
    assert sorted(view.folded) == sorted(n for n, m in modules.items() if type(m).__name__ == "BatchNorm2d")
    calls, steps = raw_graph_calls(FROZEN_TRACE)
    raw = [e for e in calls[0] if e["name"].startswith("mkldnn::_convolution_pointwise")]
    raw_weights = Counter((tuple(e["args"]["Input Dims"][2 if e["name"].endswith("_") else 1]),
                           e["args"]["Concrete Inputs"][5 if e["name"].endswith("_") else 4]) for e in raw)
    layer_weights = Counter((tuple(convs[layer.name].weight.shape), str(list(convs[layer.name].stride)))
                            for layer in view.layers)
    assert layer_weights == raw_weights
    for layer in view.layers:
        (extern,) = layer.extern
        assert extern.kernel.startswith("mkldnn::_convolution_pointwise")
        assert extern.attribution in (PROVENANCE, ORDER_AND_SHAPES)
    total_us = sum(e["dur"] for events in calls for e in events if e["name"].startswith("mkldnn::_convolution"))
    assert sum(layer.extern[0].ms_per_step for layer in view.layers) == pytest.approx(total_us / 1e3 / steps)
    assert view.freezing and view.compiled_by == "model file"
    assert all(view.handled(bn) == "folded" for bn in view.folded)


def test_analyze_reads_the_compiled_view_without_torch():
    """`analyze` of a recorded compiled trace shows the same per-layer view in a process where torch cannot load."""
    from convdoctor.pipeline import analyze_trace
    from convdoctor.reports.json_report import report_to_dict

    code = ("import sys, json; sys.modules['torch'] = None\n"
            "from pathlib import Path\n"
            "from convdoctor.pipeline import analyze_trace\n"
            "from convdoctor.reports.json_report import report_to_dict\n"
            f"print(json.dumps(report_to_dict(analyze_trace(Path({str(PROVENANCE_TRACE)!r})))['compiled']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    offline = json.loads(result.stdout)
    assert offline == json.loads(json.dumps(report_to_dict(analyze_trace(PROVENANCE_TRACE))["compiled"]))
    assert {layer["name"] for layer in offline["layers"]} >= {"stem.0", "layer1.0.conv1", "layer3.1.conv2"}
