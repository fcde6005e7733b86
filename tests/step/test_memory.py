"""The Memory view against independent computations on the raw JSON of real traces: a capture with
profile_memory=True (PyTorch 2.13's ``Total Allocated``) and a PyTorch 1.9-era V100 trace (``Bytes`` only)."""

from __future__ import annotations

import bisect
import re
from collections import defaultdict

import pytest
from conftest import SHARED_TRACES, raw_events

from convdoctor.analyzer.step import memory
from convdoctor.analyzer.trace.reader import load_profile

STEP = re.compile(r"^ProfilerStep#\d+$")


def device_of(args: dict) -> str:
    kind, index = args.get("Device Type"), args.get("Device Id")
    return "cpu" if kind == 0 else f"cuda:{index}" if kind == 1 else f"{kind}:{index}"


def oracle(events: list[dict]) -> tuple[dict[str, int], dict[tuple[str, str], float]]:
    """Per device, the peak of the bytes allocated inside a ProfilerStep (``Total Allocated``, else the running sum of
    ``Bytes`` from the device's first memory event); per (outermost CPU operator around it on its thread, device),
    the bytes allocated per step. An allocation at the instant one operator ends and the next starts is the next's;
    a ``ProfilerStep#N`` operator (PyTorch 1.9's step mark) is no operator; thread ids are compared as text (that
    trace writes them as numbers on memory events and as strings on operators)."""
    steps = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("ph") == "X" and STEP.match(e.get("name", ""))]
    in_step = lambda ts: any(start <= ts <= end for start, end in steps)  # noqa: E731
    cpu_ops = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "Operator") and not STEP.match(e["name"]):
            cpu_ops[(str(e["pid"]), str(e["tid"]))].append(e)
    outermost = {}
    for thread, ops in cpu_ops.items():
        ops.sort(key=lambda e: (e["ts"], -e["dur"]))
        tops, reach = [], float("-inf")
        for e in ops:
            if e["ts"] >= reach:
                tops.append(e)
                reach = e["ts"] + e["dur"]
        outermost[thread] = (tops, [o["ts"] for o in tops])
    running, peaks, by_op = defaultdict(int), {}, defaultdict(float)
    for e in sorted((e for e in events if e.get("ph") == "i" and e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        args, device = e["args"], device_of(e["args"])
        running[device] += args["Bytes"]
        allocated = args.get("Total Allocated", running[device])
        if not in_step(e["ts"]):
            continue
        peaks[device] = max(peaks.get(device, allocated), allocated)
        if args["Bytes"] > 0:
            thread, starts = outermost.get((str(e["pid"]), str(e["tid"])), ([], []))
            at = bisect.bisect_right(starts, e["ts"]) - 1  # the last to start by then
            around = [thread[at]] if at >= 0 and e["ts"] <= thread[at]["ts"] + thread[at]["dur"] else []
            by_op[(around[-1]["name"] if around else memory.NO_OPERATOR, device)] += args["Bytes"] / len(steps)
    return peaks, by_op


@pytest.mark.parametrize("source", ["capture", "resnet50"])
def test_peaks_and_top_allocators_match_the_raw_trace(source, step_views_run):
    if source == "capture":
        events, view = step_views_run.events, step_views_run.report.memory
    else:
        trace = SHARED_TRACES["resnet50"]
        events, view = raw_events(trace), memory.memory_view(load_profile(trace))
    peaks, by_op = oracle(events)
    assert {d.device: d.peak_bytes for d in view.devices} == peaks and peaks
    assert all(d.relative == (source == "resnet50") for d in view.devices)
    ranked = sorted(by_op.values(), reverse=True)
    assert [row.bytes_per_step for row in view.top_ops] == pytest.approx(ranked[:memory.TOP_OPS])
    for row in view.top_ops:
        assert row.bytes_per_step == pytest.approx(by_op[(row.name, row.device)])
    assert view.other_ops == len(ranked[memory.TOP_OPS:])
    assert view.other_bytes_per_step == pytest.approx(sum(ranked[memory.TOP_OPS:]))


def test_the_curve_holds_the_peak_within_its_step(step_views_run):
    (device,) = step_views_run.report.memory.devices
    assert device.device == "cpu" and device.step is not None and device.events > 0
    assert max(b for _, b in device.curve) == device.peak_bytes
    assert (device.peak_at_us, device.peak_bytes) in device.curve
    assert all(0 <= t <= device.step_us for t, _ in device.curve)
    assert [t for t, _ in device.curve] == sorted(t for t, _ in device.curve)


def test_a_long_curve_is_thinned_keeping_its_extremes():
    (cuda,) = [d for d in memory.memory_view(load_profile(SHARED_TRACES["resnet50"])).devices if d.device == "cuda:0"]
    assert cuda.events > memory.MAX_POINTS >= len(cuda.curve)  # a step of more GPU memory events, thinned
    assert max(b for _, b in cuda.curve) == cuda.peak_bytes


def test_a_trace_without_memory_events_says_so():
    view = memory.memory_view(load_profile(SHARED_TRACES["cpu_only"]))
    assert view.devices == () and view.top_ops == ()
    assert any("no memory events" in note for note in view.notes)
