"""Conv kernels read by name: algorithm families, tensor-core use, and the kernels that run after each layer —
checked on the real V100 ResNet-50 trace against facts computed here from its raw JSON."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict

import pytest
from conftest import SHARED_TRACES

from convdoctor.analyzer.conv.kernels import algorithm_family, layer_kernels, uses_tensor_cores
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.reader import load_profile

# Kernel names as they appear in public profiler output (PyTorch, TensorRT and TensorFlow issues and sources).
NAMES = [
    ("volta_scudnn_128x64_relu_interior_nn_v1", "implicit gemm", False),
    ("volta_h884cudnn_256x128_ldg8_relu_exp_medium_nhwc_tn_v1", "implicit gemm", True),
    ("turing_fp16_s1688cudnn_fp16_128x128_ldg8_relu_f2f_exp_medium_nhwc_gelu_tn_v1", "implicit gemm", True),
    ("sm80_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x16_stage4_warpsize2x2x1_g1"
     "_tensor16x8x8_kernel", "implicit gemm", True),
    ("sm80_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize256x64x32_stage3_warpsize4x1x1_g1"
     "_tensor16x8x16_execute_kernel__5x_cudnn", "implicit gemm", True),
    ("sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x64x8_stage3_warpsize2x2x1_ffma", "explicit gemm", False),
    ("void cutlass::Kernel2<cutlass_80_simt_sgemm_128x256_8x4_nt_align1>", "explicit gemm", False),
    ("volta_fp16_scudnn_fp16_128x128_stridedB_splitK_small_nn_v1", "implicit gemm", False),
    ("void cudnn::detail::dgrad_engine<float, 512, 6, 5, 3, 3, 3, false>", "direct", False),
    ("void cudnn::winograd_nonfused::winogradForwardData4x4<float, float>", "winograd", False),
    ("void nchwToNhwcKernel<float, float, float, true, false, (cudnnKernelDataType_t)0>", "layout conversion", None),
]


@pytest.mark.parametrize("name, family, tensor_cores", NAMES, ids=[n[0][:40] for n in NAMES])
def test_kernel_names_say_algorithm_and_tensor_cores(name: str, family: str, tensor_cores: bool | None):
    assert algorithm_family(name) == family
    assert uses_tensor_cores(name) is tensor_cores


@pytest.fixture(scope="module")
def v100():
    analysis = analyze_convs(load_profile(SHARED_TRACES["resnet50"]))
    return analysis, layer_kernels(analysis)


@pytest.fixture(scope="module")
def raw_v100():
    with gzip.open(SHARED_TRACES["resnet50"], "rt") as f:
        return json.load(f)["traceEvents"]


def test_fp32_on_v100_never_runs_on_tensor_cores(v100):
    analysis, kernels = v100
    assert set(kernels) == {layer.name for layer in analysis.layers} and len(kernels) == 53
    assert all(k.tensor_core_share == 0.0 for k in kernels.values())  # V100 has no FP32 tensor cores


def test_every_layer_has_a_forward_algorithm_and_backward_ones(v100):
    _, kernels = v100
    for name, k in kernels.items():
        passes = {p for (p, family) in k.algorithms if family not in ("helper", "layout conversion")}
        assert passes == {"forward", "backward"}, name


def test_family_totals_match_the_raw_kernels(v100, raw_v100):
    """Winograd kernel time launched in the trace's profiled steps (found through each kernel's runtime call)
    equals what the layers' winograd families add up to."""
    analysis, kernels = v100
    steps = [(e["ts"], e["ts"] + e["dur"]) for e in raw_v100 if e.get("name", "").startswith("ProfilerStep#")]
    launched_at = {e["args"]["correlation"]: e["ts"] for e in raw_v100 if e.get("cat", "").lower() == "runtime"}
    in_steps = [e for e in raw_v100 if e.get("cat", "").lower() == "kernel" and "winograd" in e["name"].lower()
                and any(a <= launched_at[e["args"]["correlation"]] < b for a, b in steps)]
    expected_ms = sum(e["dur"] for e in in_steps) / len(steps) / 1e3
    got_ms = sum(s.us_per_step for k in kernels.values() for (p, f), s in k.algorithms.items()
                 if f == "winograd") / 1e3
    assert expected_ms > 1.0 and got_ms == pytest.approx(expected_ms, rel=1e-6)


def test_the_stem_conv_is_followed_by_batch_norm_relu_and_max_pool(v100, raw_v100):
    """Independently: on the compute stream, the kernels after the first conv kernel of each step and before the
    next conv kernel are the stem's BN, ReLU and max-pool."""
    analysis, kernels = v100
    stem = next(layer for layer in analysis.layers if layer.input_shape[1] == 3)
    categories = {c for c in kernels[stem.name].neighbours}
    assert {"batch norm", "activation", "pooling"} <= categories
    by_stream = defaultdict(list)
    for e in raw_v100:
        if e.get("cat", "").lower() == "kernel":
            by_stream[e["args"]["stream"]].append(e)
    stream = max(by_stream.values(), key=len)
    stream.sort(key=lambda e: e["ts"])
    conv_names = {name for layer in analysis.layers for name in layer.kernel_names}
    first = next(i for i, e in enumerate(stream) if e["name"] == "volta_scudnn_128x64_relu_medium_nn_v1")
    after = []
    for e in stream[first + 1:]:
        if e["name"] in conv_names:
            break
        after.append(e["name"])
    assert any("bn_fw" in n for n in after) and any("max_pool" in n for n in after)
    assert any("clamp_min" in n or "threshold" in n for n in after)


def test_cpu_traces_have_no_device_kernels():
    analysis = analyze_convs(load_profile(SHARED_TRACES["cpu_only"]))
    assert layer_kernels(analysis) == {}
