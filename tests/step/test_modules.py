"""The Modules view against independent computations: forward and backward times from the raw JSON of a real
train-mode capture, parameters and output sizes from the real model, FLOPs from the model's shapes."""

from __future__ import annotations

import math
from collections import defaultdict
from urllib.parse import unquote

import pytest
import torch
from conftest import SHARED_TRACES, STEP_VIEWS

from convdoctor.analyzer.capture.workload import import_model_file
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.step import modules
from convdoctor.analyzer.trace.reader import load_profile

BACKWARD_NODE = "autograd::engine::evaluate_function: "


def nodes(view) -> dict:
    found, stack = {}, list(view.roots)
    while stack:
        node = stack.pop()
        found[node.name] = node
        stack.extend(node.children)
    return found


def oracle_module_times(events: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Per module scope (``module::Class::name`` annotations), per step: the host time of the outermost CPU
    operators inside its calls, and the time of the outermost autograd node of each sequence number its operators
    recorded (computed here from the raw events, by time containment on the annotation's thread)."""
    complete = [e for e in events if e.get("ph") == "X"]
    steps = sum(1 for e in complete if e["name"].startswith("ProfilerStep#"))
    cpu_ops = defaultdict(list)
    for e in complete:
        if e.get("cat") == "cpu_op":
            cpu_ops[(e["pid"], e["tid"])].append(e)
    nodes_by_sequence: dict[int, dict] = {}
    for e in sorted(complete, key=lambda e: (e["ts"], -e["dur"])):
        number = e.get("args", {}).get("Sequence number")
        if e.get("cat") == "cpu_op" and e["name"].startswith(BACKWARD_NODE) and number is not None:
            nodes_by_sequence.setdefault(number, e)
    forward, sequences = defaultdict(float), defaultdict(set)
    for scope in complete:
        if not (scope.get("cat") == "user_annotation" and scope["name"].startswith("module::")):
            continue
        name = unquote(scope["name"].split("::", 2)[2])
        start, end = scope["ts"], scope["ts"] + scope["dur"]
        inside = [e for e in cpu_ops[(scope["pid"], scope["tid"])] if start <= e["ts"] and e["ts"] + e["dur"] <= end]
        for e in inside:
            if not any(o is not e and o["ts"] <= e["ts"] and e["ts"] + e["dur"] <= o["ts"] + o["dur"]
                       and (o["ts"], -o["dur"]) < (e["ts"], -e["dur"]) for o in inside):
                forward[name] += e["dur"]
            if "Sequence number" in e.get("args", {}):
                sequences[name].add(e["args"]["Sequence number"])
    backward = {name: sum(nodes_by_sequence[n]["dur"] for n in numbers if n in nodes_by_sequence) / steps
                for name, numbers in sequences.items()}
    return {name: us / steps for name, us in forward.items()}, backward


@pytest.fixture(scope="module")
def view(step_views_run):
    return step_views_run.report.modules


@pytest.fixture(scope="module")
def model():
    return import_model_file(STEP_VIEWS).get_model()


def test_forward_and_backward_times_match_the_raw_trace(step_views_run, view):
    forward, backward = oracle_module_times(step_views_run.events)
    found = nodes(view)
    assert set(found) == set(forward) and len(found) == view.module_count
    for name, node in found.items():
        assert node.forward_us == pytest.approx(forward[name], rel=1e-9), name
        assert node.backward_us == pytest.approx(backward.get(name, 0.0), rel=1e-9, abs=1e-9), name
    assert found["<model>"].backward_us > 0 and found["features.0.conv"].backward_us > 0  # a real backward pass


def test_the_tree_is_the_model_and_times_nest(view, model):
    found = nodes(view)
    assert set(found) == {name or "<model>" for name, _ in model.named_modules()}
    (root,) = view.roots
    assert root.name == "<model>" and [c.name for c in root.children] == ["features", "head"]
    assert [c.name for c in found["features.0"].children] == ["features.0.conv", "features.0.bn", "features.0.act"]

    def check(node):
        for child in node.children:
            assert child.depth == node.depth + 1
            assert child.forward_us <= node.forward_us + 1e-9, (child.name, node.name)
            assert child.backward_us <= node.backward_us + 1e-9, (child.name, node.name)
            assert child.flops <= node.flops
            check(child)
        assert sum(c.forward_us for c in node.children) <= node.forward_us + 1e-6

    check(root)


def test_parameters_and_output_sizes_come_from_the_model(view, model):
    found = nodes(view)
    outputs = {}

    def keep_first_output(name: str):
        def hook(module, args, out) -> None:
            outputs.setdefault(name or "<model>", out.numel() * out.element_size())

        return hook

    hooks = [m.register_forward_hook(keep_first_output(name)) for name, m in model.named_modules()]
    model(import_model_file(STEP_VIEWS).get_inputs())
    for hook in hooks:
        hook.remove()
    for name, module in model.named_modules():
        node = found[name or "<model>"]
        assert node.parameters == sum(p.numel() for p in module.parameters()), name
        assert node.output_bytes == outputs[name or "<model>"], name
    assert found["features.0.act"].parameters == 0 and found["<model>"].parameters > 0


def test_flops_from_the_model_shapes(view, model):
    """Convolutions and the Linear (aten::addmm) are counted; BatchNorm, ReLU and pooling are not."""
    x = import_model_file(STEP_VIEWS).get_inputs()
    batch, _, height, width = x.shape
    found = nodes(view)

    def conv(layer: torch.nn.Conv2d) -> int:
        return 2 * batch * layer.out_channels * layer.in_channels * math.prod(layer.kernel_size) * height * width

    linear = model.head[1]
    expected = {"features.0.conv": conv(model.features[0].conv), "features.1.conv": conv(model.features[1].conv),
                "head.1": 2 * batch * linear.in_features * linear.out_features}
    for name, flops in expected.items():
        assert found[name].flops == flops, name
    assert found["features.0"].flops == expected["features.0.conv"]
    assert found["features.0.bn"].flops == 0 and found["features.2"].flops == 0
    assert found["<model>"].flops == sum(expected.values())
    assert "not counted" in view.flops_counted


def test_the_html_tree_is_cut_and_counts_the_rest(step_views_run, monkeypatch):
    monkeypatch.setattr(modules, "MAX_SHOWN", 4)
    view = modules.module_view(step_views_run.report.analysis)
    shown = nodes(type(view)(view.time_basis, view.shown, 0, (), 0, ()))
    assert view.shown_count == len(shown) == 4
    assert sum(node.hidden for node in shown.values()) == view.module_count - 4
    assert len(nodes(view)) == view.module_count  # the whole tree stays for report.json


def test_a_trace_without_module_scopes_says_so():
    view = modules.module_view(analyze_convs(load_profile(SHARED_TRACES["resnet50"])))
    assert view.roots == () and view.module_count == 0
    assert any("no module scopes" in note for note in view.notes)
