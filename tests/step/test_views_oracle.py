"""The Overview, Operators and Kernels views on real traces (CUDA: V100 training, A100 recsys, an A100 DDP rank; a
CPU trace), each summed figure checked against tests/step/raw_views.py's independent reading of the raw JSON."""

from __future__ import annotations

import math

import pytest
import raw_views
from conftest import DATA

from convdoctor.analyzer.step.occupancy import computed_occupancy_pct
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.pipeline import step_views

TRACES = {
    "v100": DATA / "resnet50_v100_train_fp32.pt.trace.json.gz",
    "recsys": DATA / "recsys_a100_train_noconv.pt.trace.json.gz",
    "ddp": DATA / "resnet50_a100_ddp_rank0_step5.json.gz",
    "cpu": DATA / "cpu_only_small.pt.trace.json.gz",
}
GPU_TRACES = ("v100", "recsys", "ddp")


@pytest.fixture(scope="session")
def analyzed() -> dict[str, tuple]:
    """Each trace read once: (profile, its views, the raw reading)."""
    result = {}
    for key, path in TRACES.items():
        profile = load_profile(path)
        result[key] = (profile, step_views(profile), raw_views.Raw(path))
    return result


def close(ours: float, theirs: float, rel: float = 1e-6) -> bool:
    return math.isclose(ours, theirs, rel_tol=rel, abs_tol=1e-3)  # 1 ns: the clock's resolution


@pytest.mark.parametrize("key", TRACES)
def test_breakdown_matches_a_sweep_over_the_raw_events_and_sums_to_the_step(analyzed, key):
    profile, views, raw = analyzed[key]
    overview = views.overview
    assert len(overview.steps) == max(len(raw.steps), 1)
    for step, span in zip(overview.steps, raw.steps or [(profile.step_spans[0][1], profile.step_spans[0][2])]):
        assert close(step.span_us, span[1] - span[0])
        theirs = raw_views.breakdown(raw, span)
        for part in step.parts:
            assert close(part.time_us, theirs[part.name]), (key, step.step, part.name)
        assert close(sum(p.time_us for p in step.parts), step.span_us)
    for i, part in enumerate(overview.parts):
        assert close(part.time_us, sum(s.parts[i].time_us for s in overview.steps) / len(overview.steps))
    assert close(sum(p.share for p in overview.parts), 1.0)
    top = max(overview.parts, key=lambda p: p.time_us)
    assert overview.verdict.startswith(f"{top.name} takes {top.share:.0%}")


@pytest.mark.parametrize("key", GPU_TRACES)
def test_gpu_use_matches_the_raw_kernels(analyzed, key):
    _, views, raw = analyzed[key]
    gpu = views.overview.gpu
    span = sum(e - s for s, e in raw.steps)
    pieces = raw_views.kernel_pieces(raw, gpu.device)
    assert pieces and 0 < gpu.utilization <= 1
    assert close(gpu.utilization, raw_views.covered(pieces) / span)
    assert close(gpu.sm_efficiency, raw_views.covered(pieces, lambda k: k["args"].get("blocks per SM", 0)) / span)
    estimates = [(k["args"].get("est. achieved occupancy %"), b - a) for a, b, k in pieces]
    if all(isinstance(v, (int, float)) and 0 <= v <= 100 for v, _ in estimates):  # Kineto's estimate, every kernel
        assert gpu.occupancy_from == "trace"
        assert close(gpu.occupancy_pct, sum(v * d for v, d in estimates) / sum(d for _, d in estimates))
    else:  # computed where the trace has none: tests the formula below against Kineto's own
        assert "computed" in gpu.occupancy_from and 0 < gpu.occupancy_pct <= 100
    flags = {row.name: row.tensor_cores for row in views.kernels.rows}  # the name heuristic, per kernel name
    tensor = sum(b - a for a, b, k in pieces if flags[k["name"]] is True)
    assert close(gpu.tensor_core_share, tensor / sum(b - a for a, b, _ in pieces))


def test_tensor_core_share_tells_fp32_from_tensor_core_runs(analyzed):
    """The V100 ResNet-50 trains in FP32 (SIMT cuDNN kernels); the A100 recsys GEMMs run TF32 tensor-op kernels."""
    assert analyzed["v100"][1].overview.gpu.tensor_core_share < 0.05
    assert analyzed["recsys"][1].overview.gpu.tensor_core_share > 0.05


def test_cpu_trace_says_why_it_has_no_gpu_figures(analyzed):
    _, views, _ = analyzed["cpu"]
    assert views.overview.gpu is None and "CPU-only" in views.overview.gpu_missing
    assert views.kernels is None and views.kernels_shown is None
    assert {p.name: p.time_us for p in views.overview.parts}["kernel"] == 0


@pytest.mark.parametrize("key", TRACES)
@pytest.mark.parametrize("by_shape", [False, True])
def test_operators_match_the_raw_events(analyzed, key, by_shape):
    _, views, raw = analyzed[key]
    rows = views.operators.by_shape if by_shape else views.operators.by_name
    theirs = raw_views.operators(raw, by_shape)
    assert len(rows) == len(theirs) > 0
    for row in rows:
        other = theirs[(row.name, row.input_shapes) if by_shape else row.name]
        assert row.calls == other["calls"], row.name
        for field in ("host_self", "host_total", "device_self", "device_total"):
            assert close(getattr(row, f"{field}_us"), other[field], 1e-9), (row.name, field)
    assert [r.host_total_us for r in rows] == sorted((r.host_total_us for r in rows), reverse=True)


@pytest.mark.parametrize("key", GPU_TRACES)
def test_kernels_match_the_raw_events(analyzed, key):
    _, views, raw = analyzed[key]
    theirs = raw_views.kernels(raw)
    assert {r.name for r in views.kernels.rows} == set(theirs)
    for row in views.kernels.rows:
        other = theirs[row.name]
        assert row.calls == other["calls"]
        assert close(row.total_us, other["total"], 1e-9) and close(row.mean_us, other["total"] / other["calls"])
        assert close(row.min_us, other["min"]) and close(row.max_us, other["max"])
        for ours, (weighted, weight) in ((row.blocks_per_sm, other["bps"]), (row.occupancy_pct, other["occ"])):
            assert ours is None if not weight else close(ours, weighted / weight)
        launchers = other["launchers"]
        assert row.launchers == len(launchers)
        assert row.launcher == (max(launchers, key=lambda n: (launchers[n], n)) if launchers else None)
    assert close(views.kernels.total_us, sum(r["total"] for r in theirs.values()), 1e-9)


def test_every_kernel_is_traced_to_an_operator_on_the_v100_trace(analyzed):
    """Correlation id -> runtime call -> enclosing CPU op links (almost) every kernel of a PyTorch training step."""
    rows = analyzed["v100"][1].kernels.rows
    linked = sum(r.total_us for r in rows if r.launcher is not None)
    assert linked / sum(r.total_us for r in rows) > 0.95
    conv = next(r for r in rows if "scudnn" in r.name or "implicit_convolve" in r.name)
    assert "conv" in conv.launcher or "cudnn" in conv.launcher


@pytest.mark.parametrize("key", ("recsys", "ddp"))
def test_computed_occupancy_agrees_with_kinetos_estimate(analyzed, key):
    """Where a trace has Kineto's estimate, the occupancy computed from the launch record and the device's limits
    (used for traces without it) gives the same value for nearly every kernel. Kineto writes 0 for kernels with more
    shared memory per block than the default 48 KiB (its occupancy calculator does not opt in to more), though they
    ran: those are left out."""
    profile, _, _ = analyzed[key]
    props = {p["id"]: p for p in profile.device_properties}
    pairs = [(k.est_occupancy_pct, computed_occupancy_pct(k, props[k.device])) for k in profile.kernels
             if k.est_occupancy_pct is not None and k.device in props
             and k.shared_memory_bytes <= props[k.device]["sharedMemPerBlock"]]
    assert len(pairs) > 100 and all(c is not None for _, c in pairs)
    agree = sum(1 for est, computed in pairs if abs(est - computed) <= 1.0)  # Kineto writes whole percents
    assert agree / len(pairs) > 0.9


def test_html_tables_show_the_top_rows_and_say_how_many_more(analyzed):
    views = analyzed["recsys"][1]
    shown = views.shapes_shown
    assert shown.more == len(views.operators.by_shape) - len(shown.rows) > 0
    assert shown.rows == views.operators.by_shape[:len(shown.rows)]
