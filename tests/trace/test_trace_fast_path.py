"""The fast reading path (slim decoding, collector paused, typing fast paths) against plain `json` on the shared traces.

The expected facts are counted here from the raw JSON with the standard library, not by the parser under test.
"""

from __future__ import annotations

import functools
import gc
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_TRACES

from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.fast import TOP_LEVEL, EventTyping, NotPlain, _cut_events, split_trace
from convdoctor.analyzer.trace.reader import _EventTyper, load_profile, parse_trace, read_trace

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


def _summary_of(profile) -> list:
    from test_trace_fuzz import _summary

    return [*_summary(profile), profile.metadata, profile.device_properties]


@pytest.mark.parametrize("name", sorted(SHARED_TRACES))
def test_typed_decoding_takes_the_shared_traces_and_agrees_with_the_json_reading(name):
    """The real traces go the fast way (a regression that sent them the tolerant way would only show as time)."""
    events, top, list_shapes = split_trace(gzip.decompress(SHARED_TRACES[name].read_bytes()).decode())
    assert len(events) == len(raw_events(name)) and "traceEvents" not in top
    assert not list_shapes  # no TensorList input: the plain shape types took them, no second decoding
    assert _summary_of(load_profile(SHARED_TRACES[name])) == _summary_of(parse_trace(read_trace(SHARED_TRACES[name])))


# Top-level values around the events (before, after): the events' array is cut out of the text, or the top level is
# split the plain way where a cut cannot be right; the same events and values either way.
AROUND_EVENTS = {
    "as Kineto writes them": ({"schemaVersion": 1}, {"traceName": "trace.json", "displayTimeUnit": "ms"}),
    "an array after the events": ({}, {"ranks": [[0, 1], [2]], "traceName": "trace.json"}),
    "a bracket in a string after the events": ({}, {"traceName": "run]1.json"}),
    "a traceEvents key inside a value before the events": ({"copy": {"traceEvents": [1]}}, {}),
    "an empty event list": ({"copy": {"traceEvents": []}}, {}),
}


@pytest.mark.parametrize("layout", sorted(AROUND_EVENTS))
def test_the_events_are_cut_out_of_the_text_only_where_that_is_right(layout):
    before, after = AROUND_EVENTS[layout]
    trace = json.loads(gzip.decompress(SHARED_TRACES["cpu_only"].read_bytes()))
    events = [] if layout == "an empty event list" else trace["traceEvents"]
    others = {key: value for key, value in trace.items() if key not in after and key != "traceEvents"}
    text = json.dumps({**before, **others, "traceEvents": events, **after}).encode()
    decoded, top, _ = split_trace(text)
    plain = TOP_LEVEL.decode(text)
    assert decoded == split_trace(text.decode())[0]  # a str is split the plain way
    assert len(decoded) == len(events) and top == {k: v for k, v in plain.items() if k != "traceEvents"}
    if layout == "as Kineto writes them":
        assert _cut_events(text) is not None


@pytest.mark.parametrize("name", sorted(SHARED_TRACES))
def test_the_events_of_the_shared_traces_are_cut_out_of_the_text(name):
    """A regression that split them the plain way (twice the scanning) would only show as time."""
    assert _cut_events(gzip.decompress(SHARED_TRACES[name].read_bytes())) is not None


def test_typing_takes_each_event_out_of_the_decoded_list():
    """Each event is freed as soon as it is typed (its memory goes to the records), in trace order."""
    events, _, list_shapes = split_trace(gzip.decompress(SHARED_TRACES["resnet50"].read_bytes()))
    typing = EventTyping(_EventTyper().kind)
    typing.add(events, list_shapes)
    ops, kernels = typing.ops, typing.kernels
    assert events == []
    profile = load_profile(SHARED_TRACES["resnet50"])
    assert len(ops) == len(profile.ops) and len(kernels) == len(profile.kernels)
    assert [k.ts_us for k in kernels] == [e["ts"] for e in raw_events("resnet50")
                                          if e.get("ph") == "X" and e.get("cat", "").lower() in DEVICE_CATEGORIES]


@functools.cache
def _resnet50_excerpt() -> str:
    """The real V100 trace cut to its first tenth in time (and its metadata events): the same kinds of events and
    fields, a tenth of the parsing for each of the many changed copies below."""
    trace = json.loads(gzip.decompress(SHARED_TRACES["resnet50"].read_bytes()))
    times = [e["ts"] for e in trace["traceEvents"] if "ts" in e]
    end = min(times) + (max(times) - min(times)) / 10
    trace["traceEvents"] = [e for e in trace["traceEvents"] if e.get("ph") == "M" or e.get("ts", end + 1) <= end]
    return json.dumps(trace)


def _one_kernel_and_op_changed(tmp_path, op_args=None, kernel_args=None, **event_keys):
    """An excerpt of the real V100 trace with its first operator's and first kernel's fields changed, written to a
    file."""
    trace = json.loads(_resnet50_excerpt())
    op = next(e for e in trace["traceEvents"] if e.get("cat") == "Operator" and e["args"].get("Input Dims"))
    kernel = next(e for e in trace["traceEvents"] if e.get("cat") == "Kernel")
    op["args"].update(op_args or {})
    kernel["args"].update(kernel_args or {})
    op.update(event_keys)
    path = tmp_path / "changed.pt.trace.json"
    path.write_text(json.dumps(trace))
    return path


# Values the field types take, and that the typing turns into other values (as trace.py's functions do).
TAKEN = {
    "sub-nanosecond duration": dict(dur=0.0004),
    "negative sub-nanosecond start": dict(ts=-0.0002),
    "Kineto's failed occupancy": dict(kernel_args={"est. achieved occupancy %": -99}),
    "occupancy above 100": dict(kernel_args={"est. achieved occupancy %": 101.5}),
    "negative warps per SM": dict(kernel_args={"warps per SM": -1}),
    "lower-case spellings": dict(op_args={"External id": None, "Input Dims": None}),
    "a huge id": dict(op_args={"Sequence number": 10**30}),
    "string pid and int tid": dict(pid="Spans", tid=7),
    "TensorList shapes": dict(op_args={"Input Dims": [[[1, 2], [3, 4]], []]}),
    "TensorList strides": dict(op_args={"Input Strides": [[], [[8, 1], [1]], [[]]]}),
    "empty TensorList": dict(op_args={"Input Dims": [[], [[]], [[], [2]]]}),
    "sizes and lists mixed in one entry": dict(op_args={"Input Dims": [[1, [2, 3]], [[4], 5], [6]]}),
    "an operator turned into an instant": dict(ph="i"),  # not typed: its keys are skipped, as flows' are
}
# Values the field types refuse: the trace is read the tolerant way, to the same Profile.
REFUSED = {
    "time as a string": dict(ts="123.5"),
    "null duration": dict(dur=None),
    "time beyond an int64 clock": dict(ts=2.0**64),
    "name not a string": dict(name=17),
    "negative size in a TensorList": dict(op_args={"Input Dims": [[[1, 2], [-3]]]}),
    "shapes nested three deep": dict(op_args={"Input Strides": [[[[1]]]]}),
    "negative size": dict(op_args={"Input Dims": [[-1, 3]]}),
    "null id": dict(op_args={"External id": None}),
    "boolean device": dict(kernel_args={"device": True}),
    "registers as a float": dict(kernel_args={"registers per thread": 32.0}),
    "grid of two dims": dict(kernel_args={"grid": [1, 2]}),
    "zero block": dict(kernel_args={"block": [0, 1, 1]}),
    "input type not a string": dict(op_args={"Input type": ["float", 3]}),
    "args not an object": dict(args=[1, 2]),
    "a phase the Trace Event Format does not have": dict(ph="Z"),
    "phase not a string": dict(ph=1),
}


@pytest.mark.parametrize("change", sorted(TAKEN))
def test_values_the_typed_decoding_takes_type_as_the_json_reading_does(tmp_path, change):
    changes = dict(TAKEN[change])
    if change == "lower-case spellings":
        changes["op_args"] = {"external id": 5, "Input dims": [[2, 3]]}
        path = _one_kernel_and_op_changed(tmp_path, **changes)
        trace = json.loads(path.read_text())
        op = next(e for e in trace["traceEvents"] if e.get("args", {}).get("external id") == 5)
        del op["args"]["External id"], op["args"]["Input Dims"]
        path.write_text(json.dumps(trace))
    else:
        path = _one_kernel_and_op_changed(tmp_path, **changes)
    split_trace(path.read_text())  # taken: no NotPlain
    profile = load_profile(path)
    assert _summary_of(profile) == _summary_of(parse_trace(read_trace(path), str(path)))
    if change == "an operator turned into an instant":
        assert len(profile.ops) == len(load_profile(_one_kernel_and_op_changed(tmp_path)).ops) - 1
    if change == "sizes and lists mixed in one entry":  # typed as the tolerant reading types it: unknown
        assert any(op.input_dims == [[], [], [6]] for op in profile.ops)


@pytest.mark.parametrize("change", sorted(REFUSED))
def test_values_the_typed_decoding_refuses_are_read_the_tolerant_way(tmp_path, change):
    path = _one_kernel_and_op_changed(tmp_path, **REFUSED[change])
    with pytest.raises(NotPlain):
        split_trace(path.read_text())
    assert _summary_of(load_profile(path)) == _summary_of(parse_trace(read_trace(path), str(path)))


def test_an_event_without_a_phase_is_read_the_tolerant_way(tmp_path):
    path = _one_kernel_and_op_changed(tmp_path, op_args={"External id": 123456789})
    trace = json.loads(path.read_text())
    del next(e for e in trace["traceEvents"] if e.get("args", {}).get("External id") == 123456789)["ph"]
    path.write_text(json.dumps(trace))
    with pytest.raises(NotPlain):
        split_trace(path.read_text())
    profile = load_profile(path)
    assert _summary_of(profile) == _summary_of(parse_trace(read_trace(path), str(path)))
    assert all(op.external_id != 123456789 for op in profile.ops)  # skipped, as the tolerant reading skips it


def test_json_that_only_the_standard_library_reads_is_read_the_tolerant_way(tmp_path):
    path = _one_kernel_and_op_changed(tmp_path, kernel_args={"blocks per SM": float("inf")})  # written Infinity
    assert "Infinity" in path.read_text()
    with pytest.raises(NotPlain):
        split_trace(path.read_text())
    profile = load_profile(path)
    assert _summary_of(profile) == _summary_of(parse_trace(read_trace(path), str(path)))
    assert any(k.blocks_per_sm is None for k in profile.kernels)


@pytest.fixture(scope="module")
def tensorlist_trace(tmp_path_factory) -> Path:
    """A real CPU trace, with shapes, of a tiny model whose ops take TensorList inputs: ``torch.cat`` in the
    forward pass, and the ``_foreach`` ops of an SGD step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1, foreach=True)
    x = torch.randn(2, 3, 8, 8)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y = conv(x)
        torch.cat([y, x, y], dim=1).sum().backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("tensorlist") / "tensorlist.pt.trace.json"
    prof.export_chrome_trace(str(path))
    return path


def test_a_real_trace_with_tensorlist_shapes_takes_the_fast_path(tensorlist_trace):
    raw = json.loads(tensorlist_trace.read_text())["traceEvents"]
    cat = next(e for e in raw if e.get("name") == "aten::cat")
    assert cat["args"]["Input Dims"][0] == [[2, 4, 8, 8], [2, 3, 8, 8], [2, 4, 8, 8]]  # a TensorList's shapes
    events, _, list_shapes = split_trace(tensorlist_trace.read_text())  # taken: no NotPlain
    assert list_shapes and len(events) == len(raw)
    profile = load_profile(tensorlist_trace)
    assert _summary_of(profile) == _summary_of(parse_trace(read_trace(tensorlist_trace), str(tensorlist_trace)))
    assert [op.input_dims for op in profile.ops if op.name == "aten::cat"] == [cat["args"]["Input Dims"]]
    foreach = [op for op in profile.ops if op.name.startswith("aten::_foreach")]
    assert foreach and any(op.input_dims[0] == [[4, 3, 3, 3], [4]] for op in foreach)  # weight and bias together
    layers = layer_facts(analyze_convs(profile))
    assert len(layers) == 1 and layers == layer_facts(analyze_convs(parse_trace(read_trace(tensorlist_trace))))


def test_convdoctor_s_own_traces_take_the_fast_path(small_cnn_run):
    _, report, _ = small_cnn_run
    assert report["trace_files"]
    for trace in report["trace_files"]:
        split_trace(gzip.decompress(Path(trace).read_bytes()) if trace.endswith(".gz") else Path(trace).read_text())
