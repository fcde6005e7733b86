"""A model file that returns torch.compile(model), profiled as such: the eager module and the compiled one each get a
real trace, Inductor's kernel calls are attributed to the conv layers (checked against the raw trace JSON), and the
rules leave alone what compile already did. Compiles a two-conv model (seconds)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import MODELS, raw_graph_calls

from convdoctor.analyzer.candidates.transforms import compiled
from convdoctor.analyzer.capture.inductor_capture import COMPILED_WORKER, record_compiled
from convdoctor.analyzer.capture.recording import record
from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.analyzer.conv.compiled import PROVENANCE, compiled_view
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.inductor_record import COMPILED_BY_MODEL_FILE
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.cd109_conv_bn_fold import ConvBnFoldRule
from convdoctor.rules.cd116_torch_compile import TorchCompileRule

TINY = MODELS / "compiled_tiny.py"


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory):
    """The tiny compiled model file's workload, its eager analysis with the compiled view, and the compiled trace."""
    logdir = tmp_path_factory.mktemp("compiled") / "tb"
    workload = load_workload(TINY, device="cpu")
    eager = record(workload, logdir, "tiny", steps=2).publish()
    analysis = analyze_convs(load_profile(eager[0]))
    traces = record_compiled(workload, workload.model_file_compile.apply, COMPILED_BY_MODEL_FILE, logdir,
                             "tiny-compiled", steps=2, eager_unprofiled_step_us=analysis.unprofiled_step_us)
    (trace,) = traces.publish()
    analysis.compiled = compiled_view(load_profile(trace))
    return workload, analysis, trace


def test_the_model_file_compile_is_kept_apart_from_an_eager_copy(captured):
    workload, _, trace = captured
    assert workload.model_file_compile is not None
    assert type(workload.model).__name__ == "Tiny"  # the eager module, copied; the compile applies to copies
    assert trace.name.startswith(COMPILED_WORKER) and trace.parent.name == "tiny-compiled"


def test_each_conv_gets_its_extern_call_and_the_kernels_of_its_batch_norm(captured):
    _, analysis, trace = captured
    view = analysis.compiled
    assert view.by_model_file and [layer.name for layer in view.layers] == ["conv1", "conv2"]
    calls, steps = raw_graph_calls(trace)
    assert len(calls) == steps == 2
    raw: Counter[str] = Counter()
    for events in calls:
        conv1, conv2 = [e for e in events if e["name"] == "aten::convolution"]  # the code calls them in this order
        raw["conv1"] += conv1["dur"]
        raw["conv2"] += conv2["dur"]
    for layer, bn in zip(view.layers, ("bn1", "bn2")):
        (extern,) = layer.extern
        assert extern.kernel == "aten::convolution" and extern.attribution == PROVENANCE
        assert extern.ms_per_step == pytest.approx(raw[layer.name] / 1e3 / steps, rel=1e-9)
        assert bn in layer.neighbours and "relu" in layer.neighbours
        (kernel,) = [k for k in layer.fused if bn in k.modules]
        assert kernel.kernel.startswith("cpp_fused_") and kernel.ms_per_step > 0
        raw_kernel = [e["dur"] for events in calls for e in events if e["name"] == f"graph_0_{kernel.kernel}"]
        assert kernel.ms_per_step == pytest.approx(sum(raw_kernel) / 1e3 / steps, rel=1e-9)
    assert view.unprofiled_step_ms > 0 and view.eager_unprofiled_step_ms > 0 and view.compile_s > 0
    assert view.notes == ()


def test_the_trace_metadata_names_modules_and_kernels(captured):
    _, _, trace = captured
    recorded = json.loads(Path(trace).read_text())["convdoctor"]["inductor"]
    assert recorded["modules"]["conv1"] == "Conv2d" and recorded["eager_order"][:3] == ["conv1", "bn1", "relu"]
    (graph,) = recorded["graphs"]
    assert [kernel for kernel, _ in graph].count("extern_kernels.convolution") == 2


def test_cd116_leaves_a_compiled_model_file_alone(captured):
    _, analysis, _ = captured
    rule = TorchCompileRule()
    rule.min_share = 0.0  # whatever share of this tiny model's step its BNs and ReLUs take on a busy machine
    assert list(rule.check(analysis)) == []
    eager_only = replace(analysis, compiled=None)
    assert [f.rule_id for f in rule.check(eager_only)] == ["CD116"]  # the same trace, uncompiled


def test_cd109_skips_batch_norms_compile_fused(captured):
    _, analysis, _ = captured
    assert list(ConvBnFoldRule().check(analysis)) == []
    (finding,) = ConvBnFoldRule().check(replace(analysis, compiled=None))
    assert sorted(row.bn for row in finding.evidence.pairs) == ["bn1", "bn2"]


@pytest.mark.slow
def test_profile_compiled_compiles_an_eager_copy_as_cd116_does(tmp_path: Path):
    """`profile --compiled` on an eager model: CD116's torch.compile of a copy, attributed the same way."""
    workload = replace(load_workload(TINY, device="cpu"), model_file_compile=None)
    traces = record_compiled(workload, compiled, "convdoctor", tmp_path, "run", steps=1)
    view = compiled_view(load_profile(traces.files[0]))
    assert not view.by_model_file and [layer.name for layer in view.layers] == ["conv1", "conv2"]
    assert all(layer.extern and layer.extern[0].ms_per_step > 0 for layer in view.layers)
