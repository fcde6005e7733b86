"""The fast reading path (slim decoding, collector paused, typing fast paths) against plain `json` on the shared traces.

The expected facts are counted here from the raw JSON with the standard library, not by the parser under test.
"""

from __future__ import annotations

import gc
import gzip
import json
from collections import Counter

import pytest

from conftest import SHARED_TRACES
from convdoctor.analyzer.layers import analyze_convs
from convdoctor.analyzer.trace import load_profile, parse_trace, read_trace

HOST_CATEGORIES = {"operator", "cpu_op", "user_annotation", "python_function", "runtime", "cuda_runtime", "cuda_driver"}
DEVICE_CATEGORIES = {"kernel", "memcpy", "gpu_memcpy", "memset", "gpu_memset"}


def raw_events(name: str) -> list[dict]:
    return json.loads(gzip.decompress(SHARED_TRACES[name].read_bytes()))["traceEvents"]


@pytest.mark.parametrize("name", sorted(SHARED_TRACES))
def test_fast_path_types_every_event_plain_json_counts(name):
    events = [e for e in raw_events(name) if e.get("ph") == "X"]
    profile = load_profile(SHARED_TRACES[name])
    assert len(profile.ops) == sum(str(e.get("cat")).lower() in HOST_CATEGORIES for e in events)
    assert len(profile.kernels) == sum(str(e.get("cat")).lower() in DEVICE_CATEGORIES for e in events)
    assert Counter(op.name for op in profile.ops) == Counter(
        e["name"] for e in events if str(e.get("cat")).lower() in HOST_CATEGORIES)
    steps = sorted((e["ts"], int(e["name"].split("#")[1]), e["dur"]) for e in events
                   if e["name"].startswith("ProfilerStep#"))
    assert [(s.ts_us, s.number, s.dur_us) for s in profile.steps] == steps


def layer_facts(analysis) -> list[tuple]:
    return [(layer.name, layer.calls, layer.forward_us, layer.backward_us, len(layer.kernels))
            for layer in analysis.layers]


@pytest.mark.parametrize("name", sorted(SHARED_TRACES))
def test_fast_path_finds_the_conv_layers_of_the_plain_json_reading(name):
    gc_was_enabled = gc.isenabled()
    profile = load_profile(SHARED_TRACES[name])
    assert gc.isenabled() == gc_was_enabled  # the collector is back as it was
    fast = analyze_convs(profile)
    plain = analyze_convs(parse_trace(json.loads(gzip.decompress(SHARED_TRACES[name].read_bytes())), "plain"))
    assert layer_facts(fast) == layer_facts(plain)
    forward_conv_calls = sum(e.get("ph") == "X" and e.get("name") == "aten::conv2d" for e in raw_events(name))
    assert sum(layer.calls for layer in fast.layers) == forward_conv_calls


@pytest.mark.parametrize("name", sorted(SHARED_TRACES))
def test_step_of_is_the_first_step_holding_the_time(name):
    profile = load_profile(SHARED_TRACES[name])
    times = [op.ts_us for op in profile.ops[::7]] + [s.ts_us for s in profile.steps] + [s.end_us for s in profile.steps]
    times += [profile.steps[0].ts_us - 1, profile.steps[-1].end_us + 1] if profile.steps else []
    for ts in times:
        expected = next((s for s in profile.steps if s.ts_us <= ts <= s.end_us), None)
        assert profile.step_of(ts) is expected


def test_an_event_object_outside_the_event_list_is_read_as_before(tmp_path):
    """load_profile types events while decoding; an event-like object elsewhere (here: a copy of a real event in
    the device properties and in another event's args) must stay a JSON object, as the reading without it keeps."""
    trace = json.loads(gzip.decompress(SHARED_TRACES["resnet50"].read_bytes()))
    kernel = next(e for e in trace["traceEvents"] if e.get("cat") == "Kernel")
    trace["deviceProperties"].append(dict(kernel))
    next(e for e in trace["traceEvents"] if e.get("cat") == "Operator")["args"]["nested"] = dict(kernel)
    path = tmp_path / "nested.pt.trace.json"
    path.write_text(json.dumps(trace))
    fast = load_profile(path)
    plain = parse_trace(read_trace(path, slim=True), str(path))
    assert len(fast.ops) == len(plain.ops) and len(fast.kernels) == len(plain.kernels)
    assert fast.device_properties == plain.device_properties and fast.device_properties[-1]["name"] == kernel["name"]
    assert layer_facts(analyze_convs(fast)) == layer_facts(analyze_convs(plain))
