"""The GPU timeline and the kernel launch/occupancy fields, on the real V100 and A100 traces and a CPU-only one."""

from __future__ import annotations

import math
import statistics

import pytest
from conftest import SHARED_TRACES

from convdoctor.analyzer.conv.gpu_timeline import gpu_timeline
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.profile import EventKind
from convdoctor.analyzer.trace.reader import load_profile


@pytest.fixture(scope="module")
def resnet50():
    return load_profile(SHARED_TRACES["resnet50"])


def _kernels_starting_in(profile, step):
    return [k for k in profile.kernels if k.kind is EventKind.KERNEL and step.ts_us <= k.ts_us < step.end_us]


def test_v100_busy_and_idle_time_per_step(resnet50):
    timeline = gpu_timeline(resnet50)
    assert timeline is not None and timeline.device == 0
    assert [s.step for s in timeline.steps] == [s.number for s in resnet50.steps]
    for step, line in zip(resnet50.steps, timeline.steps):
        assert line.span_us == step.dur_us
        assert 0 < line.busy_us <= line.span_us
        # one stream and no overlapping kernels: the union is the sum of the clipped durations
        clipped = sum(max(0.0, min(k.end_us, step.end_us) - max(k.ts_us, step.ts_us)) for k in resnet50.kernels)
        assert line.busy_us == pytest.approx(clipped)
        assert sum(end - start for start, end in line.gaps) == pytest.approx(line.idle_us)
        assert all(step.ts_us <= start < end <= step.end_us for start, end in line.gaps)
    assert timeline.busy_us <= timeline.span_us
    assert timeline.idle_us == pytest.approx(timeline.span_us - timeline.busy_us)
    assert 0 < timeline.idle_share < 1
    assert 0.3 < timeline.idle_share < 0.6  # a single-process DataLoader leaves the V100 idle ~44% of each step
    assert dict(timeline.stream_busy_us) == {7: pytest.approx(timeline.busy_us)}


def test_v100_kernel_count_and_median(resnet50):
    timeline = gpu_timeline(resnet50)
    inside = [k for step in resnet50.steps for k in _kernels_starting_in(resnet50, step)]
    assert timeline.kernel_count == len(inside)
    assert [line.kernel_count for line in timeline.steps] == [len(_kernels_starting_in(resnet50, s))
                                                             for s in resnet50.steps]
    assert timeline.kernels_per_step == pytest.approx(len(inside) / len(resnet50.steps))
    assert 1000 < timeline.kernels_per_step < 2000  # ResNet-50 training: ~1,500 launches per step
    assert timeline.median_kernel_us == statistics.median(k.dur_us for k in inside)
    assert 0 < timeline.median_kernel_us < 20  # most launches are tiny elementwise and BN-bookkeeping kernels


def test_the_analysis_keeps_the_timeline_of_the_busiest_device(resnet50):
    analysis = analyze_convs(resnet50)
    assert analysis.gpu_timeline is analysis.gpu_timeline
    assert gpu_timeline(resnet50, device=0) == analysis.gpu_timeline
    assert gpu_timeline(resnet50, device=1) is None  # device 1 ran nothing


def test_v100_occupancy_fields_parsed_and_physical(resnet50):
    props = resnet50.device_properties[0]
    kernels = [k for k in resnet50.kernels if k.kind is EventKind.KERNEL]
    fields = ("grid", "block", "registers_per_thread", "shared_memory_bytes", "blocks_per_sm", "warps_per_sm",
              "est_occupancy_pct")
    parsed = [k for k in kernels if all(getattr(k, name) is not None for name in fields)]
    assert len(parsed) / len(kernels) > 0.95
    max_warps = props["maxThreadsPerMultiprocessor"] // props["warpSize"]  # 64 on a V100
    for k in parsed:
        assert 0 <= k.est_occupancy_pct <= 100
        # resident warps per SM the estimate implies: at most 64, and at most what the grid gives each SM
        resident_warps = k.est_occupancy_pct / 100 * max_warps
        assert resident_warps <= min(max_warps, k.warps_per_sm) + 0.005 * max_warps + 1e-6
        assert 1 <= k.threads_per_block <= props["maxThreadsPerBlock"]
        assert 0 < k.registers_per_thread <= 255
        assert 0 <= k.shared_memory_bytes <= props["sharedMemPerBlockOptin"]
        # Kineto's definitions (libkineto DeviceProperties.cpp): blocks in the grid / SMs, and that times warps
        # per block -- a launch size, not resident warps, so it is not bounded by 64 (it reaches 10,035 here)
        assert k.blocks_per_sm == pytest.approx(math.prod(k.grid) / props["numSms"], rel=1e-3)
        assert k.warps_per_sm == pytest.approx(k.blocks_per_sm * k.threads_per_block / props["warpSize"], rel=1e-3)
        # the occupancy estimate is capped by the blocks the grid gives each SM (rounded to an integer %)
        assert k.est_occupancy_pct <= k.blocks_per_sm * k.threads_per_block / props["maxThreadsPerMultiprocessor"] \
            * 100 + 0.5 + 1e-6
    assert max(k.warps_per_sm for k in parsed) > max_warps


def test_launch_fields_are_none_on_memcpy_and_memset(resnet50):
    copies = [k for k in resnet50.kernels if k.kind in (EventKind.MEMCPY, EventKind.MEMSET)]
    assert copies
    assert all(k.grid is None and k.block is None and k.est_occupancy_pct is None and k.blocks_per_sm is None
               and k.registers_per_thread is None and k.threads_per_block is None for k in copies)


def test_a100_multi_stream_union_is_not_double_counted():
    profile = load_profile(SHARED_TRACES["recsys"])
    timeline = gpu_timeline(profile)
    assert timeline is not None
    assert timeline.device == 3  # rank 3 of 8 ran its kernels on cuda:3
    assert len(timeline.stream_busy_us) > 1
    assert max(timeline.stream_busy_us.values()) <= timeline.busy_us + 1e-6
    assert timeline.busy_us <= sum(timeline.stream_busy_us.values())
    assert 0 < timeline.idle_share < 1
    assert all(line.busy_us <= line.span_us for line in timeline.steps)


def test_none_on_a_cpu_only_trace():
    profile = load_profile(SHARED_TRACES["cpu_only"])
    assert gpu_timeline(profile) is None
    assert gpu_timeline(profile) is None
