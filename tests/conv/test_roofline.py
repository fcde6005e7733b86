"""The roofline: the pure per-layer function, the GPU datasheet table on the real V100 trace, and CPU peaks measured
on this machine and recorded in a real capture."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from click.testing import CliRunner
from conftest import SCHEMA, SHARED_TRACES, capture_analysis
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from convdoctor.analyzer.capture.hardware import cpu_peaks
from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.conv.layers import ConvLayer, MemoryFormat, analyze_convs
from convdoctor.analyzer.conv.peaks import (
    GIGA,
    TERA,
    Peaks,
    PeaksSource,
    datasheet_peaks,
    gpu_spec,
    trace_peaks,
    unknown_peaks,
)
from convdoctor.analyzer.conv.roofline import Bound, analyze_roofline, ridge_point, roofline
from convdoctor.analyzer.trace.environment import RecordedEnvironment
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.cli import main
from convdoctor.pipeline import analyze_trace
from convdoctor.reports.charts import roofline_chart

PEAKS = Peaks(100 * GIGA, 10 * GIGA, PeaksSource.MEASURED, "test roofs")  # ridge point: 10 FLOP/byte


def layer(flops: int, bytes_: int, *, calls: int = 2, forward_us: float = 40.0, dtype: str = "float32") -> ConvLayer:
    """A conv layer with just what the roofline reads: FLOPs and bytes per call, calls and forward time."""
    return ConvLayer(name="conv", module_class="Conv2d", op="conv2d", input_shape=[1, 1, 1, 1],
                     weight_shape=[1, 1, 1, 1], output_shape=[1, 1, 1, 1], stride=[1, 1], padding=[0, 0],
                     dilation=[1, 1], groups=1, transposed=False, dtype=dtype, memory_format=MemoryFormat.CONTIGUOUS,
                     calls=calls, forward_us=forward_us, flops=flops, bytes=bytes_)


# ---------------------------------------------------------------------------------------------------- pure function


def test_a_layer_exactly_at_the_ridge_point():
    assert ridge_point(PEAKS) == pytest.approx(10.0)
    point = roofline(layer(1_000_000, 100_000), PEAKS)  # 10 FLOP/byte
    assert point is not None
    assert point.intensity == pytest.approx(10.0)
    assert point.attainable_flops == pytest.approx(100 * GIGA)  # both roofs give the peak there
    assert point.bound is Bound.COMPUTE  # at the ridge counts as compute-bound
    # 2 calls × 1 MFLOP in 40 µs of forward time: 50 GFLOP/s, half the roof
    assert point.achieved_flops == pytest.approx(50 * GIGA)
    assert point.pct_of_roofline == pytest.approx(50.0)


def test_memory_bound_below_the_ridge_and_compute_bound_above():
    memory = roofline(layer(200_000, 100_000), PEAKS)  # 2 FLOP/byte: bandwidth × 2 = 20 GFLOP/s
    assert memory is not None and memory.bound is Bound.MEMORY
    assert memory.attainable_flops == pytest.approx(20 * GIGA)
    assert memory.achieved_flops == pytest.approx(10 * GIGA) and memory.pct_of_roofline == pytest.approx(50.0)
    compute = roofline(layer(5_000_000, 100_000), PEAKS)  # 50 FLOP/byte: capped by the 100 GFLOP/s peak
    assert compute is not None and compute.bound is Bound.COMPUTE
    assert compute.attainable_flops == pytest.approx(100 * GIGA)
    assert compute.pct_of_roofline == pytest.approx(250.0)  # 250 GFLOP/s achieved: above a (wrong) roof is shown


@given(flops=st.integers(1, 10**12), bytes_=st.integers(1, 10**10), calls=st.integers(1, 100),
       forward_us=st.floats(1e-3, 1e7), peak=st.floats(1e6, 1e16), bandwidth=st.floats(1e6, 1e13))
def test_percent_is_at_most_100_when_achieved_is_at_most_attainable(flops, bytes_, calls, forward_us, peak,
                                                                    bandwidth):
    point = roofline(layer(flops, bytes_, calls=calls, forward_us=forward_us),
                     Peaks(peak, bandwidth, PeaksSource.DATASHEET, "random roofs"))
    assert point is not None
    assert point.attainable_flops <= peak * (1 + 1e-12)
    assert point.attainable_flops <= bandwidth * point.intensity * (1 + 1e-12)
    assert (point.bound is Bound.MEMORY) == (point.intensity < peak / bandwidth)
    if point.achieved_flops <= point.attainable_flops:
        assert 0 < point.pct_of_roofline <= 100.0


def test_no_roofline_without_peaks_flops_time_or_for_another_dtype():
    assert roofline(layer(1000, 100), unknown_peaks("no device")) is None
    assert roofline(layer(1000, 100, dtype="float16"), PEAKS) is None  # the roofs are float32 roofs
    assert roofline(layer(1000, 100, forward_us=0.0), PEAKS) is None
    no_flops = layer(1000, 100)
    no_flops.flops = None
    assert roofline(no_flops, PEAKS) is None


# ---------------------------------------------------------------------------------------------------- GPU datasheets


def test_datasheet_table_picks_the_variant_and_the_dtype_roof():
    v100 = datasheet_peaks("Tesla V100-DGXS-32GB", "float32")
    assert (v100.peak_flops_per_s, v100.bandwidth_bytes_per_s) == (15.7 * TERA, 900 * GIGA)
    assert v100.source is PeaksSource.DATASHEET and "V100" in v100.description
    assert datasheet_peaks("Tesla V100-DGXS-32GB", "float16").peak_flops_per_s == 125 * TERA  # tensor cores
    assert datasheet_peaks("Tesla V100-DGXS-32GB", "bfloat16").peak_flops_per_s == 15.7 * TERA  # no BF16 cores
    assert datasheet_peaks("Tesla V100-PCIE-16GB", "float32").peak_flops_per_s == 14 * TERA
    a100 = "NVIDIA A100-SXM4-80GB"
    assert datasheet_peaks(a100, "float32", allow_tf32=True).peak_flops_per_s == 156 * TERA
    assert datasheet_peaks(a100, "float32", allow_tf32=False).peak_flops_per_s == 19.5 * TERA
    assumed = datasheet_peaks(a100, "float32", allow_tf32=None)
    assert assumed.peak_flops_per_s == 156 * TERA and "assumed" in assumed.description
    assert datasheet_peaks(a100, "bfloat16").bandwidth_bytes_per_s == 2039 * GIGA
    assert datasheet_peaks("NVIDIA A100-PCIE-40GB", "float16").bandwidth_bytes_per_s == 1555 * GIGA
    assert gpu_spec("NVIDIA A10").label == "A10" and gpu_spec("NVIDIA A100 80GB PCIe").label == "A100 80GB PCIe"
    assert gpu_spec("NVIDIA A10G") is None  # another part: not guessed
    assert gpu_spec("NVIDIA H100 80GB HBM3").label == "H100 SXM" and gpu_spec("NVIDIA H100 PCIe").label == "H100 PCIe"
    assert gpu_spec("NVIDIA H200").bandwidth == 4800 * GIGA
    assert gpu_spec("NVIDIA L4").label == "L4" and gpu_spec("Tesla T4").tf32 is None
    assert gpu_spec("NVIDIA GeForce RTX 4090").fp16 == 165.2 * TERA
    unknown = datasheet_peaks("AMD Instinct MI250X", "float32")
    assert unknown.source is PeaksSource.UNKNOWN and not unknown.known and unknown.ridge_point is None


@pytest.fixture(scope="module")
def v100():
    return analyze_convs(load_profile(SHARED_TRACES["resnet50"]))


def test_v100_resnet50_trace_gets_v100_peaks_and_a_bound_for_every_layer(v100):
    result = analyze_roofline(v100)
    assert result.peaks.source is PeaksSource.DATASHEET
    assert (result.peaks.peak_flops_per_s, result.peaks.bandwidth_bytes_per_s) == (15.7 * TERA, 900 * GIGA)
    assert len(v100.layers) == 53 and set(result.layers) == {layer.name for layer in v100.layers}
    bounds = [point.bound for point in result.layers.values()]
    assert bounds.count(Bound.MEMORY) >= 1 and bounds.count(Bound.COMPUTE) >= 40  # ResNet-50 convs: mostly compute
    for name, point in result.layers.items():
        assert 1e12 < point.achieved_flops < 40e12, name  # TFLOP/s of a V100, forward kernel time
    # cuDNN's Winograd kernels beat the FP32 peak on direct-convolution FLOPs; the notes say why
    winograd = [layer.name for layer in v100.layers if any("winograd" in k for k in layer.kernel_names)]
    above = [name for name, point in result.layers.items() if point.pct_of_roofline > 100]
    assert above and set(above) <= set(winograd)
    assert any("Winograd" in note for note in result.notes)


def test_an_unknown_gpu_has_no_roofline_and_says_so(v100):
    props = [dict(p, name="Mystery Accelerator 9000") for p in v100.profile.device_properties]
    peaks = trace_peaks(RecordedEnvironment(), props, True, "float32")
    assert peaks.source is PeaksSource.UNKNOWN and "Mystery Accelerator 9000" in peaks.description
    saved = v100.profile.device_properties
    v100.profile.device_properties = props
    try:
        result = analyze_roofline(v100)
    finally:
        v100.profile.device_properties = saved
    assert result.layers == {} and result.notes[0].startswith("No roofline: no datasheet peaks for the GPU")


def test_analyze_cli_on_the_v100_trace_writes_a_valid_roofline(tmp_path: Path):
    result = CliRunner().invoke(main, ["analyze", str(SHARED_TRACES["resnet50"]), "--out", str(tmp_path),
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    peaks = report["summary"]["peaks"]
    assert peaks["source"] == "datasheet" and peaks["peak_gflops"] == pytest.approx(15_700)
    assert peaks["bandwidth_gbs"] == pytest.approx(900) and peaks["ridge_flop_per_byte"] == pytest.approx(15.7e3 / 900)
    assert len(report["layers"]) == 53
    for entry in report["layers"]:
        assert entry["bound"] in ("memory", "compute")
        assert entry["achieved_gflops"] > 0 and entry["attainable_gflops"] <= peaks["peak_gflops"] + 1e-6
        assert entry["pct_of_roofline"] == pytest.approx(100 * entry["achieved_gflops"] / entry["attainable_gflops"])
        assert (entry["bound"] == "memory") == (entry["intensity"] < peaks["ridge_flop_per_byte"])
    html = (tmp_path / "report.html").read_text()
    assert 'id="roofline-chart"' in html and html.count('class="layer-dot"') == 53
    analyzed = analyze_trace(SHARED_TRACES["resnet50"])
    chart = roofline_chart(analyzed.roofline, analyzed.layers)
    assert chart is not None and len(chart.dots) == 53
    assert chart.memory_roof[2:] == chart.compute_roof[:2]  # the roofs meet at the ridge point


def test_terminal_adds_bound_and_percent_when_the_width_allows(tmp_path: Path):
    args = ["analyze", str(SHARED_TRACES["resnet50"]), "--out", str(tmp_path)]
    wide = CliRunner().invoke(main, args, env={"COLUMNS": "120"})
    assert wide.exit_code == 0, wide.output
    slowest = wide.stdout.split("Slowest conv layers", 1)[1].splitlines()
    assert "bound and % of the roofline" in slowest[0]
    assert all(("compute" in line or "memory" in line) and line.endswith("%") for line in slowest[1:6])
    assert all(len(line) <= 120 for line in slowest[1:6])
    narrow = CliRunner().invoke(main, args, env={"COLUMNS": "60"})
    lines = narrow.stdout.split("Slowest conv layers", 1)[1].splitlines()
    assert "roofline" not in lines[0] and not any(line.endswith("%") for line in lines[1:6])


# ---------------------------------------------------------------------------------------------------- CPU peaks


def test_cpu_peaks_are_measured_positive_and_plausible():
    peaks = cpu_peaks()
    assert peaks.source is PeaksSource.MEASURED and peaks.dtype == "float32"
    assert peaks.peak_flops_per_s >= 1 * GIGA  # a 1024² float32 matmul: any CPU of this decade does more
    assert peaks.bandwidth_bytes_per_s >= 1 * GIGA
    assert peaks.peak_flops_per_s < 100 * TERA and peaks.bandwidth_bytes_per_s < 10 * TERA
    assert cpu_peaks() == peaks  # measured once per process and thread count
    assert peaks.ridge_point == pytest.approx(peaks.peak_flops_per_s / peaks.bandwidth_bytes_per_s)


def test_a_real_cpu_capture_records_the_peaks_and_gets_a_roofline(tmp_path: Path):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1))
    analysis = capture_analysis(workload_from(model, torch.randn(2, 3, 32, 32), device="cpu", source="two_convs"),
                                tmp_path)
    recorded = analysis.profile.environment
    assert recorded.peaks_source == "measured" and recorded.peaks_dtype == "float32"
    assert recorded.peak_flops == cpu_peaks().peak_flops_per_s
    assert recorded.peak_bandwidth == cpu_peaks().bandwidth_bytes_per_s
    result = analyze_roofline(analysis)
    assert result.peaks.source is PeaksSource.MEASURED
    assert result.peaks.peak_flops_per_s == recorded.peak_flops
    assert set(result.layers) == {layer.name for layer in analysis.layers} and len(result.layers) == 2
    for point in result.layers.values():
        assert point.bound in (Bound.MEMORY, Bound.COMPUTE) and point.pct_of_roofline > 0


def test_a_cpu_trace_captured_elsewhere_has_no_roofline():
    analysis = analyze_convs(load_profile(SHARED_TRACES["cpu_only"]))
    peaks = analyze_roofline(analysis).peaks
    assert peaks.source is PeaksSource.UNKNOWN and "records no CPU peaks" in peaks.description


def _recorded(metadata: dict) -> RecordedEnvironment:
    """A trace's recorded environment as the reader types it."""
    return RecordedEnvironment.from_metadata(metadata)


def test_junk_in_a_recorded_environment_means_no_roofline_not_a_crash():
    junk_name = _recorded({"device_name": 7})
    assert trace_peaks(junk_name, [{"name": None}, {"id": 0}], True, "float32").source is PeaksSource.UNKNOWN
    assert trace_peaks(_recorded({"device": "cpu", "device_name": "AMD EPYC"}), [{"name": "Tesla T4"}], True,
                       "float16").peak_flops_per_s == 65 * TERA  # a CPU name recorded: the trace's GPU is used
    for flops, bandwidth in (("1e9", 1e9), (float("nan"), 1e9), (True, 1e9), (1e9, -5.0), (None, 1e9)):
        recorded = {"peaks_source": "measured", "peak_flops": flops, "peak_bandwidth": bandwidth}
        assert trace_peaks(_recorded(recorded), [], False, "float32").source is PeaksSource.UNKNOWN, (flops, bandwidth)
    recorded = {"peaks_source": "measured", "peak_flops": 5e10, "peak_bandwidth": 1e10, "peaks_dtype": "float32"}
    assert trace_peaks(_recorded(recorded), [], False, "float32").ridge_point == pytest.approx(5.0)
    # measured in float32 only
    assert trace_peaks(_recorded(recorded), [], False, "bfloat16").source is PeaksSource.UNKNOWN


def test_a_cpu_trace_without_recorded_peaks_says_so_in_the_report(small_cnn_run, tmp_path: Path):
    """convdoctor's own trace with its recorded environment removed: no roofline, and both reports say why."""
    out, profiled, _ = small_cnn_run
    assert profiled["summary"]["peaks"]["source"] == "measured"
    (trace,) = (out / "tb").rglob("*.pt.trace.json")
    data = json.loads(trace.read_text())
    del data["convdoctor"]
    stripped = tmp_path / "foreign.pt.trace.json"
    stripped.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["analyze", str(stripped), "--out", str(tmp_path / "out"), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["summary"]["peaks"] is None and len(report["layers"]) == 15
    assert all(layer["bound"] is None and layer["pct_of_roofline"] is None for layer in report["layers"])
    assert any(note.startswith("No roofline: the trace records no CPU peaks") for note in report["summary"]["notes"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="no-roofline"' in html and 'id="roofline-chart"' not in html
