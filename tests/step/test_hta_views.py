"""The HTA-class views (analyzer/step) against an oracle: the same figures read from the raw JSON events of real GPU
traces with plain json/gzip and the definitions written out below (nothing of convdoctor's analyzer)."""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import DATA, cached_profile

from convdoctor.analyzer.step.critical_path import CriticalPath, NoCriticalPath
from convdoctor.analyzer.step.hta import HtaViews, hta_views

TRACES = {  # what each holds: see tests/data/SOURCES.md
    "resnet50_v100": DATA / "resnet50_v100_train_fp32.pt.trace.json.gz",  # 6 steps, pageable copies, 1 stream
    "recsys_a100": DATA / "recsys_a100_train_noconv.pt.trace.json.gz",  # 6 steps, 4 streams, .item() syncs
    "alexnet_a100": DATA / "alexnet_a100_nosteps_noshapes.json.gz",  # no steps, 2 streams, pageable copies
    "resnet50_ddp": DATA / "resnet50_a100_ddp_rank0_step5.json.gz",  # 1 step, 2 streams (NCCL), event syncs
}
DEVICE_CATS = {"kernel", "Kernel", "gpu_memcpy", "Memcpy", "gpu_memset", "Memset"}
RUNTIME_CATS = {"cuda_runtime", "Runtime", "runtime", "cuda_driver"}
SYNCS = {"cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy"}
LAUNCHES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cudaMemcpyAsync", "cudaMemsetAsync"}


class Raw:
    """A trace's raw events, read with json/gzip only."""

    def __init__(self, path: Path) -> None:
        data = json.loads(gzip.decompress(path.read_bytes()))
        events = data["traceEvents"] if isinstance(data, dict) else data
        self.x = [e for e in events if e.get("ph") == "X" and "dur" in e]
        self.device = [e for e in self.x if e.get("cat") in DEVICE_CATS]
        self.runtime = [e for e in self.x if e.get("cat") in RUNTIME_CATS]
        self.by_corr = {e["args"]["correlation"]: e for e in self.runtime if "correlation" in e.get("args", {})}
        steps = [e for e in self.x if re.fullmatch(r"ProfilerStep#\d+", e["name"])]
        if steps:
            self.spans = [(e["ts"], e["ts"] + e["dur"]) for e in steps]
        else:  # the whole traced span: host events and device events
            timed = [e for e in self.x if e.get("cat") not in ("Trace", "trace")]
            self.spans = [(min(e["ts"] for e in timed), max(e["ts"] + e["dur"] for e in timed))]

    def inside(self, ts: float) -> bool:
        return any(a <= ts < b for a, b in self.spans)

    def streams(self) -> dict[tuple, list[dict]]:
        out: dict[tuple, list[dict]] = defaultdict(list)
        for e in self.device:
            out[(e["args"].get("device"), e["args"].get("stream"))].append(e)
        return {k: sorted(v, key=lambda e: e["ts"]) for k, v in out.items()}


@functools.cache
def loaded(name: str) -> tuple[Raw, HtaViews | None]:
    """Each trace read once per session, raw and through convdoctor."""
    return Raw(TRACES[name]), hta_views(cached_profile(TRACES[name]))


@pytest.fixture(params=list(TRACES))
def trace(request):
    return request.param, *loaded(request.param)


def test_idle_time_by_cause_matches_the_raw_events(trace):
    name, raw, views = trace
    got = {(s.device, s.stream): s for s in views.idle.streams}
    expected = raw.streams()
    assert set(got) == set(expected)
    assert name not in ("recsys_a100", "alexnet_a100", "resnet50_ddp") or len(got) > 1  # the multi-stream traces
    for key, events in expected.items():
        host = kernel = other = 0.0
        for a, b in zip(events, events[1:]):
            gap = b["ts"] - (a["ts"] + a["dur"])
            call = raw.by_corr.get(b["args"].get("correlation"))
            if call is not None and call["ts"] > a["ts"] + a["dur"]:
                host += gap
            elif gap < 30:
                kernel += gap
            else:
                other += gap
        row = got[key]
        assert row.events == len(events)
        assert row.host_wait_us == pytest.approx(host, abs=1e-3)
        assert row.kernel_wait_us == pytest.approx(kernel, abs=1e-3)
        assert row.other_us == pytest.approx(other, abs=1e-3)
    assert sum(s.idle_us for s in views.idle.streams) > 0


def test_launch_statistics_match_the_raw_events(trace):
    _, raw, views = trace
    pairs = [(raw.by_corr[e["args"]["correlation"]], e) for e in raw.device
             if raw.by_corr.get(e["args"].get("correlation"), {}).get("name") in LAUNCHES]
    stats = views.launches
    assert stats.launches == len(pairs) > 0
    assert stats.kernel_us == pytest.approx(sum(k["dur"] for _, k in pairs))
    assert stats.launch_call_us == pytest.approx(sum(c["dur"] for c, _ in pairs))
    delays = [max(0.0, k["ts"] - c["ts"] - c["dur"]) for c, k in pairs]
    assert stats.launch_delay_us == pytest.approx(sum(delays))
    assert stats.delay_outliers == sum(d > 100 for d in delays)
    assert stats.short == sum(k["dur"] < c["dur"] for c, k in pairs)
    assert stats.short_kernel_us == pytest.approx(sum(k["dur"] for c, k in pairs if k["dur"] < c["dur"]))
    assert stats.runtime_outliers == sum(c["dur"] > 50 for c, _ in pairs)
    top = stats.kernels[0]  # the kernel with the largest summed launch delay, from the raw pairs
    by_name: dict[str, float] = defaultdict(float)
    for (c, k), d in zip(pairs, delays):
        by_name[k["name"]] += d
    assert top.launch_delay_us == pytest.approx(max(by_name.values()))
    assert len(stats.kernels) + stats.kernels_left_out == len(by_name)


def test_queue_length_matches_the_raw_events(trace):
    _, raw, views = trace
    changes: dict[tuple, list[tuple[float, int]]] = defaultdict(list)
    for e in raw.device:
        call = raw.by_corr.get(e["args"].get("correlation"))
        if call is not None:
            key = (e["args"].get("device"), e["args"].get("stream"))
            changes[key] += [(call["ts"], 1), (e["ts"], -1)]
    got = {(q.device, q.stream): q for q in views.queues}
    assert set(got) == set(changes)
    for key, moves in changes.items():
        length = peak = 0
        for _, change in sorted(moves):
            length += change
            peak = max(peak, length)
        assert got[key].max_length == peak
        assert got[key].enqueued == len(moves) // 2
        assert max(n for _, n in got[key].series) == peak
        assert 0 <= got[key].mean_length <= peak


def test_synchronizations_in_the_steps_match_the_raw_events(trace):
    _, raw, views = trace
    calls = [e for e in raw.runtime if e["name"] in SYNCS and raw.inside(e["ts"])]
    assert views.syncs.count == len(calls) > 0
    assert views.syncs.blocked_us == pytest.approx(sum(e["dur"] for e in calls))
    assert views.syncs.steps == len(raw.spans)
    assert not views.syncs.has_python_stacks and all(s.source is None for s in views.syncs.sites)


def test_item_is_named_as_the_host_read_that_synchronizes():
    raw, views = loaded("recsys_a100")
    item = [s for s in views.syncs.sites if s.operator == "aten::item"]
    assert item and all(s.host_read and not s.pageable_copy for s in item)
    ops = [e for e in raw.x if e.get("cat") == "cpu_op" and not e["name"].startswith("ProfilerStep#")]
    charged = 0  # syncs whose outermost enclosing CPU operator on their thread is aten::item
    for call in (e for e in raw.runtime if e["name"] in SYNCS and raw.inside(e["ts"])):
        around = [o for o in ops if o["tid"] == call["tid"] and o["pid"] == call["pid"]
                  and o["ts"] <= call["ts"] and call["ts"] + call["dur"] <= o["ts"] + o["dur"]]
        charged += bool(around) and min(around, key=lambda o: (o["ts"], -o["dur"]))["name"] == "aten::item"
    assert sum(s.count for s in item) == charged > 0


def test_pageable_copies_match_the_raw_events(trace):
    name, raw, views = trace
    copies = [e for e in raw.device if re.search(r"HtoD.*Pageable", e["name"]) and raw.inside(e["ts"])]
    p = views.pageable
    assert p.copies == len(copies)
    assert p.copy_us == pytest.approx(sum(e["dur"] for e in copies))
    calls = [raw.by_corr[e["args"]["correlation"]] for e in copies if e["args"].get("correlation") in raw.by_corr]
    assert p.call_us == pytest.approx(sum(c["dur"] for c in calls)) and p.calls_found == len(calls)
    assert (p.copies > 0) == (name in ("resnet50_v100", "alexnet_a100"))


def test_critical_path_splits_each_step_exactly(trace):
    _, raw, views = trace
    path = views.critical_path
    assert isinstance(path, CriticalPath)
    spans = raw.spans
    assert path.steps == len(spans)
    assert path.path_us == pytest.approx(sum(b - a for a, b in spans) / len(spans))
    parts = path.host_us + path.device_us + path.waiting_us + path.unattributed_us
    assert parts == pytest.approx(path.path_us)
    assert min(path.host_us, path.device_us, path.waiting_us, path.unattributed_us) >= 0
    # device time on the path is device time that ran inside the steps
    busy = sum(min(b, e["ts"] + e["dur"]) - max(a, e["ts"]) for e in raw.device for a, b in spans
               if e["ts"] < b and e["ts"] + e["dur"] > a)
    assert 0 <= path.device_us * len(spans) <= busy + 1e-6
    names = {e["name"] for e in raw.device}
    assert bool(path.kernels) == (path.device_us > 0) and all(k.name in names for k in path.kernels)
    assert sum(k.us_per_step for k in path.kernels) <= path.device_us + 1e-6


def test_traces_without_device_events_say_why():
    cpu = hta_views(cached_profile(DATA / "cpu_only_small.pt.trace.json.gz"))
    assert cpu is None
    no_kernels = hta_views(cached_profile(DATA / "alexnet_a100_cupti_range_nokernels.json.gz"))
    assert no_kernels.idle.streams == [] and no_kernels.launches is None and no_kernels.queues == []
    assert isinstance(no_kernels.critical_path, NoCriticalPath) and "device events" in no_kernels.critical_path.reason
    assert no_kernels.syncs.count > 0  # the synchronizations are host calls: still there
