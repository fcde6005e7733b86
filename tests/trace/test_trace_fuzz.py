"""Property tests: real traces, mutated, either analyze or raise the one typed TraceError — nothing else.

Every base is a real trace: the tiny CPU trace, a slice of the V100 ResNet-50 trace (one profiled step, its
forward head and backward tail), and small CPU traces recorded here through convdoctor's own capture (module
scopes, ``Concrete Inputs``, ``Input Strides``, conv backward nodes, layout conversions). Hypothesis mutates them
the ways a user's file can differ: keys dropped, values of the wrong type, events deleted, duplicated and
reordered, odd category spellings, items that are not events, a ``traceEvents`` that is not a list, and bytes
truncated or corrupted (plain and gzip). The property: parse (or load) followed by the conv analysis, the GPU
timeline and every rule either completes or raises TraceError.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import EXAMPLES, MODELS, SHARED_TRACES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convdoctor.analyzer.conv.gpu_timeline import gpu_timeline
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.conv.roofline import analyze_roofline
from convdoctor.analyzer.trace.profile import Profile
from convdoctor.analyzer.trace.reader import CATEGORY_KINDS, load_profile, parse_trace, read_trace
from convdoctor.analyzer.trace.schema import ARG_KEYS
from convdoctor.errors import TraceError
from convdoctor.rules.registry import load_rules, run_rules

# CONVDOCTOR_FUZZ_EXAMPLES=5000 for a long hunt; 40 keeps the file near 15 s (new examples every run).
FUZZ = settings(max_examples=int(os.environ.get("CONVDOCTOR_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Models recorded as bases: conv + bias + BN with backward, a channels_last flip, grouped/nested convs,
# depthwise-separable, preprocessing in the forward.
RECORDED = {
    "bias_bn_train": (MODELS / "cd113_bias_bn.py", "train"),
    "layout_flip": (MODELS / "layout_flip.py", "eval"),
    "grouped_train": (MODELS / "cd107_nested.py", "train"),
    "separable": (EXAMPLES / "seed_separable.py", "eval"),
    "preprocessing": (MODELS / "cd115_normalize_resize.py", "eval"),
}


# ---------------------------------------------------------------------------------------------------- bases


@functools.lru_cache(maxsize=None)
def _bases() -> dict[str, dict[str, Any]]:
    bases = {"cpu_only": read_trace(SHARED_TRACES["cpu_only"]), "v100_step": _v100_slice()}
    bases.update(_recorded())
    return bases


def _v100_slice(head: int = 1500, tail: int = 700) -> dict[str, Any]:
    """The V100 trace's top-level keys and part of its first step: the forward head and backward tail.

    The events keep their order in the file; the step annotation and a few events of every other phase
    (instants, flows, metadata) come along.
    """
    data = read_trace(SHARED_TRACES["resnet50"])
    events = data["traceEvents"]
    step = next(e for e in events if str(e.get("name", "")).startswith("ProfilerStep#"))
    start, end = step["ts"], step["ts"] + step["dur"]
    inside = sorted((e["ts"], i) for i, e in enumerate(events) if e.get("ph") == "X" and start <= e["ts"] < end)
    keep = {i for _, i in inside[:head] + inside[-tail:]}
    per_phase: dict[Any, int] = {}
    for i, e in enumerate(events):
        if e.get("ph") != "X" and per_phase.get(e.get("ph"), 0) < 20:
            per_phase[e.get("ph")] = per_phase.get(e.get("ph"), 0) + 1
            keep.add(i)
    sliced = {k: v for k, v in data.items() if k != "traceEvents"}
    sliced["traceEvents"] = [e for i, e in enumerate(events) if i in keep]
    return sliced


def _recorded() -> dict[str, dict[str, Any]]:
    """Traces recorded here, on CPU, through convdoctor's own capture (one step each)."""
    from convdoctor.analyzer.capture.recording import capture
    from convdoctor.analyzer.capture.workload import load_workload

    traces = {}
    with tempfile.TemporaryDirectory() as logdir:
        for name, (model_file, mode) in RECORDED.items():
            workload = load_workload(model_file, device="cpu", mode=mode)
            (trace, *_) = capture(workload, Path(logdir), name, steps=1)
            traces[name] = read_trace(trace)
    return traces


@functools.lru_cache(maxsize=None)
def _rules() -> list:
    return load_rules().rules


def _analyze(profile: Profile) -> None:
    """Everything `analyze` computes from a Profile before rendering: layers, roofline, GPU timeline, every rule."""
    analysis = analyze_convs(profile)
    analyze_roofline(analysis)
    gpu_timeline(profile)
    for device in {k.device for k in profile.kernels[:50]}:
        gpu_timeline(profile, device)
    assert isinstance(analysis.mode, str)
    analysis.share(analysis.conv_time_us)
    run_rules(_rules(), analysis)


def _parse_and_analyze(data: Any) -> None:
    try:
        profile = parse_trace(data)
    except TraceError:
        return
    _analyze(profile)


def _load_and_analyze(path: Path) -> None:
    try:
        profile = load_profile(path)
    except TraceError as exc:
        assert "\n" not in str(exc), "a TraceError is one line"
        return
    _analyze(profile)


def test_every_base_analyzes_as_it_is():
    for name, data in _bases().items():
        profile = parse_trace(data, name)
        assert profile.ops, name
        _analyze(profile)
    assert analyze_convs(parse_trace(_bases()["v100_step"])).layers
    assert all(analyze_convs(parse_trace(_bases()[name])).layers for name in RECORDED)


def _with_conv_dims(trace: dict[str, Any], change: Callable[[list[Any]], list[Any]]) -> dict[str, Any]:
    """The trace with ``change`` applied to the ``Input Dims`` of every conv op (forward and backward)."""
    events = []
    for event in trace["traceEvents"]:
        args = event.get("args") if isinstance(event, dict) else None
        if isinstance(args, dict) and "onv" in str(event.get("name")) and isinstance(args.get("Input Dims"), list):
            event = {**event, "args": {**args, "Input Dims": change(copy.deepcopy(args["Input Dims"]))}}
        events.append(event)
    return {**trace, "traceEvents": events}


def _set_dim(tensor: int, dim: int, value: int) -> Callable[[list[Any]], list[Any]]:
    def change(dims: list[Any]) -> list[Any]:
        if len(dims) > tensor and isinstance(dims[tensor], list) and len(dims[tensor]) > dim:
            dims[tensor][dim] = value
        return dims
    return change


@pytest.mark.parametrize("base", ["v100_step", *RECORDED])
@pytest.mark.parametrize(("tensor", "dim", "value"), [
    (0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0), (1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 3, 0),  # empty tensors
    (0, 1, 1), (1, 2, 1), (0, 2, 2**40), (1, 0, 2**62),  # one channel, 1-pixel kernel, huge sizes
])
def test_conv_shapes_with_empty_or_huge_dims_analyze(base: str, tensor: int, dim: int, value: int):
    """Every conv of a real trace given the same odd size, so that the rules see whole layers of them."""
    _analyze(parse_trace(_with_conv_dims(_bases()[base], _set_dim(tensor, dim, value))))


@pytest.mark.parametrize("base", ["v100_step", "bias_bn_train"])
@pytest.mark.parametrize(("key", "value"), [
    ("dur", 5e-324), ("dur", 1e-310), ("dur", 0.0004), ("dur", -0.0004), ("dur", 9.2e18), ("dur", 1e300),
    ("ts", -1.7e308), ("ts", 1e300), ("ts", 5e-324),
])
def test_conv_times_at_the_edges_of_float_write_finite_reports(tmp_path: Path, base: str, key: str, value: float):
    """Sub-nanosecond and astronomic times on every conv call: the whole `analyze` writes its JSON report, which
    holds only finite numbers (json with allow_nan=False), instead of dividing by an underflowed duration."""
    from convdoctor.pipeline import analyze_path

    trace = dict(_bases()[base])
    trace["traceEvents"] = [{**e, key: value} if isinstance(e, dict) and "onv" in str(e.get("name")) else e
                            for e in trace["traceEvents"]]
    path = tmp_path / "edge.pt.trace.json"
    path.write_text(json.dumps(trace))
    result = analyze_path(path, tmp_path / "out")
    assert not result.failed and json.loads((tmp_path / "out" / "report.json").read_text())


# ------------------------------------------------------------------------------------------------ values

HUGE = [2**63, -(2**63) - 1, 10**30, -(10**30), 10**400, -(10**400)]
JSONISH = ["", "12", "-1", "0", "1.5", "nan", "NaN", "inf", "-inf", "1e999", "[1, 1]", "[0, 0]", "[-1, 2]", "[]",
           "[[1]]", "null", "true", "True", "False", "{}", '"x"', "[1e999]", "[" + "9" * 30 + "]", "stream 7"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e308]),
    st.text(max_size=8),
    st.sampled_from(JSONISH),
)
SHAPE = st.lists(st.one_of(st.integers(0, 300), st.sampled_from([0, 1, 2**40])), max_size=6)
DIMS = st.lists(st.lists(st.one_of(st.integers(-2, 300), st.sampled_from([0, 2**40])), max_size=6), max_size=5)
WEIRD = st.one_of(
    SCALARS,
    DIMS,
    st.lists(SCALARS, max_size=6),
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3), max_leaves=8),
)
EVENT_KEYS = ["ts", "dur", "name", "cat", "ph", "pid", "tid", "args", "id", "s"]
ARG_NAMES = sorted({key for keys in ARG_KEYS.values() for key in keys} | {"Device", "Fwd thread id"})
CATEGORIES = sorted(set(CATEGORY_KINDS) | {"Operator", "Kernel", "Runtime", "Memcpy", "Memset", "Trace", "async",
                                           "Python_Function", "CUDA_RUNTIME", "GPU_MEMCPY", " kernel", "kernel ",
                                           "cpu_instant_event", "fwdbwd", "ac2g", ""})
NAMES = ["aten::conv2d", "aten::convolution", "aten::_convolution", "aten::cudnn_convolution", "aten::conv1d",
         "aten::conv3d", "aten::conv_transpose2d", "aten::conv_transpose1d", "aten::mkldnn_convolution",
         "aten::thnn_conv2d", "aten::slow_conv_dilated2d", "ConvolutionBackward0", "CudnnConvolutionBackward",
         "MkldnnConvolutionBackward0", "aten::copy_", "aten::to_mkldnn", "aten::to_dense", "aten::batch_norm",
         "ProfilerStep#1", "ProfilerStep#-1", "ProfilerStep#" + "9" * 40, "ProfilerStep#" + "9" * 5000,
         "ProfilerStep#", "module::",
         "module::Conv2d::", "module::Conv2d", "module::Conv2d::%ZZ%", "module::%E2%82::a.b", "module::::x",
         "module::BatchNorm2d::bn1", "module::Conv2d::conv1", "nchwToNhwcKernel", "nhwcToNchwKernel",
         "Memcpy HtoD (Pageable -> Device)", "cudaLaunchKernel", "autograd::engine::evaluate_function: x",
         "DataLoader", "aten::upsample_bilinear2d", "aten::sub", "aten::div", ""]
CONCRETE_LISTS = ["Concrete Inputs", "Input Dims", "Input dims", "Input Strides", "Input type", "grid", "block"]


# ------------------------------------------------------------------------------------------------ mutations

Hot = tuple[list[int], list[int]]  # event indices: conv calls; steps, scopes, kernels and other ops rules read


def _hot(events: list[Any]) -> Hot:
    """Indices of the events the analysis reads most: conv calls (forward and backward); then steps, module
    scopes, kernels, runtime calls and the ops rules look at."""
    convs, others = [], []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            continue
        name, cat = str(event.get("name", "")), str(event.get("cat", "")).lower()
        if "onv" in name and not name.startswith("module::"):
            convs.append(i)
        elif cat in ("kernel", "runtime", "cuda_runtime", "memcpy", "gpu_memcpy") or any(
                word in name for word in ("ProfilerStep", "module::", "copy_", "mkldnn", "batch_norm", "add_",
                                          "upsample", "sub", "div")):
            others.append(i)
    return convs, others


def _pick(data: st.DataObject, events: list[Any], hot: Hot) -> int:
    """An event index: a third of the time a conv call, a third a step, scope, kernel or the like."""
    tier = data.draw(st.integers(0, 2))
    if tier < 2 and hot[tier]:
        return data.draw(st.sampled_from(hot[tier])) % len(events)
    return data.draw(st.integers(0, len(events) - 1))


def _own_event(events: list[Any], i: int) -> dict[str, Any] | None:
    """Event ``i`` copied (with its args) so that mutating it leaves the cached base alone."""
    if not isinstance(events[i], dict):
        return None
    event = dict(events[i])
    if isinstance(event.get("args"), dict):
        event["args"] = dict(event["args"])
    events[i] = event
    return event


def _target(data: st.DataObject, event: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The event itself or its args, with the keys worth touching there."""
    if isinstance(event.get("args"), dict) and data.draw(st.booleans()):
        return event["args"], ARG_NAMES
    return event, EVENT_KEYS


def drop_key(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    event = _own_event(events, _pick(data, events, hot))
    if event is None:
        return
    where, _ = _target(data, event)
    if where:
        del where[data.draw(st.sampled_from(sorted(where)))]


def set_value(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    event = _own_event(events, _pick(data, events, hot))
    if event is None:
        return
    where, known = _target(data, event)
    key = data.draw(st.sampled_from(sorted(set(where) | set(known))))
    where[key] = data.draw(WEIRD)


def set_item(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    """Replace, add or remove one element of a list-valued arg (dims, strides, concrete inputs, grid)."""
    event = _own_event(events, _pick(data, events, hot))
    if event is None or not isinstance(event.get("args"), dict):
        return
    args = event["args"]
    key = data.draw(st.sampled_from(CONCRETE_LISTS))
    items = list(args[key]) if isinstance(args.get(key), list) else []
    action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    value = data.draw(st.one_of(st.sampled_from(JSONISH), SHAPE, WEIRD))
    if action == "delete" and items:
        del items[data.draw(st.integers(0, len(items) - 1))]
    elif action == "replace" and items:
        items[data.draw(st.integers(0, len(items) - 1))] = value
    else:
        items.insert(data.draw(st.integers(0, len(items))), value)
    args[key] = items


def perturb_shape(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    """Change one tensor shape (or strides) of an op a little: a dim to 0, 1 or huge, a dim added or removed."""
    event = _own_event(events, _pick(data, events, hot))
    if event is None or not isinstance(event.get("args"), dict):
        return
    args = event["args"]
    key = data.draw(st.sampled_from(["Input Dims", "Input dims", "Input Strides"]))
    entries = list(args[key]) if isinstance(args.get(key), list) else []
    if not entries:
        return
    i = data.draw(st.integers(0, len(entries) - 1))
    shape = list(entries[i]) if isinstance(entries[i], list) else []
    action = data.draw(st.sampled_from(["set", "add", "remove", "replace"]))
    dim = data.draw(st.one_of(st.sampled_from([0, 1, 2, 3, 2**31, 2**63 - 1, 2**63, -1]), st.integers(0, 64)))
    if action == "set" and shape:
        shape[data.draw(st.integers(0, len(shape) - 1))] = dim
    elif action == "remove" and shape:
        del shape[data.draw(st.integers(0, len(shape) - 1))]
    elif action == "replace":
        shape = data.draw(SHAPE)
    else:
        shape.insert(data.draw(st.integers(0, len(shape))), dim)
    entries[i] = shape
    args[key] = entries


def set_category(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    event = _own_event(events, _pick(data, events, hot))
    if event is not None:
        event["cat"] = data.draw(st.one_of(st.sampled_from(CATEGORIES), st.sampled_from(CATEGORIES).map(str.upper),
                                           SCALARS))


def set_name(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    event = _own_event(events, _pick(data, events, hot))
    if event is not None:
        event["name"] = data.draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=12), SCALARS))


def set_phase(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    event = _own_event(events, _pick(data, events, hot))
    if event is not None:
        event["ph"] = data.draw(st.one_of(st.sampled_from(["X", "B", "E", "i", "s", "f", "M", "x", ""]), SCALARS))


def set_time(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    """Odd but numeric times: negative or zero durations, NaN, infinities, huge values, moved starts."""
    event = _own_event(events, _pick(data, events, hot))
    if event is None:
        return
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20),
                        st.sampled_from(HUGE))
    event[data.draw(st.sampled_from(["ts", "dur"]))] = data.draw(numbers)


def delete_event(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    del events[_pick(data, events, hot)]


def duplicate_event(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    event = events[_pick(data, events, hot)]
    events.insert(data.draw(st.integers(0, len(events))), event)


def move_event(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    event = events.pop(_pick(data, events, hot))
    events.insert(data.draw(st.integers(0, len(events))), event)


def reverse_events(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    events.reverse()


def insert_junk(data: st.DataObject, events: list[Any], hot: Hot) -> None:
    """An item that is not an event dict (or an empty one) somewhere in the list."""
    events.insert(data.draw(st.integers(0, len(events))), data.draw(st.one_of(WEIRD, st.just({}))))


EVENT_MUTATIONS: list[Callable[[st.DataObject, list[Any], Hot], None]] = [
    drop_key, set_value, set_item, perturb_shape, set_category, set_name, set_phase, set_time, delete_event,
    duplicate_event, move_event, reverse_events, insert_junk,
]


def _mutated_events(data: st.DataObject, events: list[Any], count: int) -> list[Any]:
    events = list(events)
    hot = _hot(events)
    for _ in range(count):
        if not events:
            break
        data.draw(st.sampled_from(EVENT_MUTATIONS))(data, events, hot)
    return events


BASE_NAMES = ["cpu_only", "v100_step", *RECORDED]


@FUZZ
@given(base=st.sampled_from(BASE_NAMES), count=st.integers(1, 8), data=st.data())
def test_mutated_events_analyze_or_raise_trace_error(base: str, count: int, data: st.DataObject):
    trace = dict(_bases()[base])
    trace["traceEvents"] = _mutated_events(data, trace["traceEvents"], count)
    _parse_and_analyze(trace)


CONV_MUTATIONS = [set_item, set_item, perturb_shape, perturb_shape, set_value, drop_key, set_time, set_name]


@FUZZ
@given(base=st.sampled_from(["v100_step", *RECORDED]), count=st.integers(1, 4), data=st.data())
def test_mutated_conv_calls_analyze_or_raise_trace_error(base: str, count: int, data: st.DataObject):
    """Mutations aimed at the conv calls: their shapes, strides, concrete arguments, types, times and names."""
    trace = dict(_bases()[base])
    events = list(trace["traceEvents"])
    convs, _ = _hot(events)
    for _ in range(count):
        data.draw(st.sampled_from(CONV_MUTATIONS))(data, events, (convs, convs))
    trace["traceEvents"] = events
    _parse_and_analyze(trace)


PEAK_KEYS = ["peak_flops", "peak_bandwidth", "peaks_source", "peaks_dtype", "peaks_description"]


def test_recorded_peak_beyond_float_range_is_not_a_crash():
    trace = dict(_bases()["layout_flip"])
    trace["convdoctor"] = {**trace["convdoctor"], "peak_flops": 10**400, "peaks_source": "measured"}
    _parse_and_analyze(trace)


@pytest.mark.parametrize(("key", "value"), [("batch_size", float("nan")), ("threads", float("inf")),
                                            ("device_name", float("nan")), ("peak_flops", -(10**400)),
                                            ("mode", ["train"]), ("dtype", {})])
def test_recorded_environment_of_the_wrong_kind_is_left_out(tmp_path: Path, key: str, value: Any):
    """convdoctor's recorded environment, edited: the value is left out and the whole `analyze` writes its report
    (a NaN copied into the workload summary made the JSON report raise)."""
    from convdoctor.pipeline import analyze_path

    trace = dict(_bases()["layout_flip"])
    trace["convdoctor"] = {**trace["convdoctor"], key: value, "peaks_source": "measured"}
    assert getattr(parse_trace(trace).environment, key) is None
    path = tmp_path / "env.pt.trace.json"
    path.write_text(json.dumps(trace))
    assert not analyze_path(path, tmp_path / "out").failed


@FUZZ
@given(base=st.sampled_from(BASE_NAMES), data=st.data())
def test_mutated_top_level_analyzes_or_raises_trace_error(base: str, data: st.DataObject):
    """The trace object itself, ``traceEvents``, ``deviceProperties`` and convdoctor's recorded environment."""
    trace: Any = dict(_bases()[base])
    action = data.draw(st.sampled_from(["not_a_dict", "events", "drop", "set", "device_properties",
                                        "environment"]))
    if action == "not_a_dict":
        trace = data.draw(st.one_of(WEIRD, st.just(trace["traceEvents"]), st.just([trace])))
    elif action == "events":  # not a list, or a list holding no events
        trace["traceEvents"] = data.draw(st.one_of(WEIRD, st.lists(WEIRD, max_size=5),
                                                   st.just({str(i): e for i, e in enumerate(trace["traceEvents"])})))
    elif action == "drop":
        del trace[data.draw(st.sampled_from(sorted(trace)))]
    elif action == "set":
        key = data.draw(st.sampled_from(sorted(set(trace) | {"deviceProperties", "convdoctor", "schemaVersion"})))
        trace[key] = data.draw(WEIRD)
    elif action == "device_properties":
        props = copy.deepcopy(trace.get("deviceProperties")) or [{"id": 0, "name": "Tesla V100-DGXS-32GB",
                                                                  "numSms": 80, "computeMajor": 7}]
        if not isinstance(props, list):
            props = [props]
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(props)))
            if i == len(props) or not isinstance(props[i], dict):
                props.insert(i, data.draw(WEIRD))
            else:
                key = data.draw(st.sampled_from(sorted(set(props[i]) | {"id", "name", "numSms", "computeMajor",
                                                                        "computeMinor", "totalGlobalMem"})))
                props[i][key] = data.draw(WEIRD)
        trace["deviceProperties"] = props
    else:
        env = dict(trace["convdoctor"]) if isinstance(trace.get("convdoctor"), dict) else {}
        keys = ["mode", "threads", "available_cores", "device", "device_name", "batch_size", "dtype",
                "cudnn_benchmark", "cudnn_allow_tf32", "matmul_allow_tf32", "torch_version", "mkldnn_enabled",
                "cpu_capability", *PEAK_KEYS]
        for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4)):
            value = st.one_of(WEIRD, st.sampled_from(["train", "eval", "cuda", "cpu", "cuda:0", "measured",
                                                      "datasheet", "float32", "Tesla V100-DGXS-32GB"]))
            env[key] = data.draw(value)
        trace["convdoctor"] = data.draw(st.one_of(st.just(env), st.just(json.dumps(env)), WEIRD))
    if isinstance(trace, dict) and isinstance(trace.get("traceEvents"), list):
        trace["traceEvents"] = _mutated_events(data, trace["traceEvents"], data.draw(st.integers(0, 2)))
    _parse_and_analyze(trace)


def _summary(profile: Profile) -> list[tuple[Any, ...]]:
    """Everything the typed events say, with links as indices, in a form two parses can be compared by."""
    index = {id(op): i for i, op in enumerate(profile.ops)}
    ops = [(op.kind, op.name, op.pid, op.tid, op.ts_us, op.dur_us, op.external_id, op.correlation,
            op.sequence_number, repr(op.input_dims), op.input_types, repr(op.input_strides), op.concrete_inputs,
            op.scope, index.get(id(op.parent)), index.get(id(op.module_call)), len(op.kernels)) for op in profile.ops]
    kernels = [(k.kind, k.name, k.device, k.stream, k.ts_us, k.dur_us, k.correlation, k.grid, k.block,
                k.registers_per_thread, k.shared_memory_bytes, k.blocks_per_sm, k.warps_per_sm, k.est_occupancy_pct,
                index.get(id(k.launcher))) for k in profile.kernels]
    return [*ops, *kernels, tuple(profile.steps), repr(profile.unknown_categories)]


@FUZZ
@given(base=st.sampled_from(BASE_NAMES), count=st.integers(0, 6), data=st.data())
def test_slim_reading_parses_to_the_same_profile(base: str, count: int, data: st.DataObject):
    """load_profile cuts events while decoding them (read_trace(slim=True)): the Profile is the same."""
    trace = dict(_bases()[base])
    trace["traceEvents"] = _mutated_events(data, trace["traceEvents"], count)
    path = _scratch() / "slim.pt.trace.json"
    path.write_text(json.dumps(trace))
    try:
        whole = parse_trace(read_trace(path))
    except TraceError:
        with pytest.raises(TraceError):
            load_profile(path)
        return
    assert _summary(load_profile(path)) == _summary(whole)


# ---------------------------------------------------------------------------------------------------- bytes


@functools.lru_cache(maxsize=None)
def _serialized() -> dict[str, bytes]:
    """Plain JSON bytes of the small bases (the V100 slice cut to 400 events), as they would be on disk."""
    small = dict(_bases()["v100_step"])
    small["traceEvents"] = small["traceEvents"][:400]
    texts = {"cpu_only": _bases()["cpu_only"], "v100_step": small, "bias_bn_train": _bases()["bias_bn_train"],
             "layout_flip": _bases()["layout_flip"]}
    return {name: json.dumps(data).encode() for name, data in texts.items()}


@functools.lru_cache(maxsize=None)
def _scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="convdoctor-fuzz-")  # removed when the test process exits


def _scratch() -> Path:
    """Where examples write their files (a function-scoped tmp_path would be shared by all examples anyway)."""
    return Path(_scratch_dir().name)


BYTE_INSERTS = [b"[" * 100_000, b"9" * 5000, b"\xff\xfe", b"\x00", b"NaN", b"-Infinity", b"}", b"]", b",", b'"',
                b"null", b"\\u", b"\xc3", "é".encode(), b"\n", b'"traceEvents": 1, ']


@FUZZ
@given(base=st.sampled_from(["cpu_only", "v100_step", "bias_bn_train", "layout_flip"]),
       action=st.sampled_from(["truncate", "insert", "flip", "none"]),
       packing=st.sampled_from(["plain", "gzip_then_cut", "cut_then_gzip", "gzip_as_plain", "plain_as_gz"]),
       data=st.data())
def test_damaged_files_load_or_raise_trace_error(base: str, action: str, packing: str, data: st.DataObject):
    raw = _serialized()[base]
    if packing == "gzip_then_cut":  # a gzip file cut short (a copy or download that stopped)
        raw = gzip.compress(raw, compresslevel=1)
    at = data.draw(st.integers(0, len(raw)))
    if action == "truncate":
        raw = raw[:at]
    elif action == "insert":
        raw = raw[:at] + data.draw(st.one_of(st.sampled_from(BYTE_INSERTS), st.binary(max_size=8))) + raw[at:]
    elif action == "flip" and raw:
        at = min(at, len(raw) - 1)
        raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
    if packing in ("cut_then_gzip", "gzip_as_plain"):
        raw = gzip.compress(raw, compresslevel=1)
    gzipped = packing in ("gzip_then_cut", "cut_then_gzip", "plain_as_gz")
    path = _scratch() / ("trace.pt.trace.json.gz" if gzipped else "trace.pt.trace.json")
    path.write_bytes(raw)
    _load_and_analyze(path)


@pytest.mark.parametrize("content", [b"", b"null", b"[]", b"[1, 2]", b'"text"', b"3", b"{}", b'{"traceEvents": null}',
                                     b'{"traceEvents": {}}', b'{"traceEvents": "x"}', b"\xef\xbb\xbf{}",
                                     b"[" * 100_000, b"[" + b"9" * 5000 + b"]", b'{"a": 1e999999}'])
@pytest.mark.parametrize("gzipped", [False, True])
def test_small_foreign_files_are_trace_errors(tmp_path: Path, content: bytes, gzipped: bool):
    path = tmp_path / ("x.pt.trace.json.gz" if gzipped else "x.pt.trace.json")
    path.write_bytes(gzip.compress(content) if gzipped else content)
    with pytest.raises(TraceError):
        load_profile(path)
