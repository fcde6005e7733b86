"""What a conv layer's device kernels say: the algorithm cuDNN/CUTLASS picked, whether it ran on tensor cores,
and the non-conv kernels that run between the layer's forward and the next conv (its neighbours).

All of it is read from kernel names, the only evidence a Kineto trace has. The name conventions, across cuDNN
generations:

- ``volta_scudnn_128x64_relu_interior_nn_v1``, ``ampere_scudnn_…``: cuDNN implicit-GEMM kernels in FP32 on the
  CUDA cores ("s" = single precision, SIMT).
- ``volta_h884cudnn_…``, ``turing_fp16_s1688cudnn_…``, ``sm80_xmma_fprop_implicit_gemm_tf32f32_…``,
  ``sm90_xmma_…``, ``cutlass_tensorop_s1688fprop_…``, ``…_wgmma_…``: tensor-core kernels (HMMA/XMMA/WGMMA
  instructions; the digits are the MMA shape: 884 = Volta, 1688 = Turing/Ampere, 16816 = Ampere+).
- ``implicit_convolve_sgemm``, ``explicit_convolve_sgemm`` + ``im2col4d``, ``winograd…``, ``fft…``/
  ``flip_filter``, ``dgrad_engine``/``wgrad_alg0_engine`` (cuDNN's direct ALGO_0), ``conv_depthwise2d`` (PyTorch's
  own depthwise kernels), ``*sgemm*`` (cuBLAS, 1x1 convs as GEMM), ``…_ffma``, ``…simt…``: FP32 kernels on the
  CUDA cores, even inside XMMA/CUTLASS names.

Tensor-core use is therefore a name heuristic: ``False`` when the name marks FP32 SIMT code, else ``True`` when it
carries an MMA marker, else ``None`` (unknown) — never guessed from the dtype alone.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable

from convdoctor.analyzer.conv.layers import (
    TRANSPOSE_KERNEL,
    ConvAnalysis,
    ConvLayer,
    is_conv_backward_node,
)
from convdoctor.analyzer.trace.profile import EventKind, Kernel, Op

# Both are matched against the lowercased name: re.IGNORECASE searches long template names ten times slower.
# Checked first: FP32 SIMT code, even inside an XMMA/CUTLASS kernel (``sm80_xmma_gemm_f32f32_…_ffma``,
# ``cutlass_80_simt_sgemm``) and pseudo-FP16 cuDNN kernels that compute in FP32 (``volta_fp16_scudnn_fp16_…``).
SIMT_NAME = re.compile(
    r"ffma|simt|scudnn|sgemm|winograd|implicit_convolve|explicit_convolve|wgrad_alg\d_engine|dgrad_engine|fft|"
    r"flip_filter|conv_depthwise|depthwise|grouped_direct|im2col")
# Then the MMA markers: instruction shapes (884 Volta, 1688 Turing, 16816 Ampere+, ``tensor16x8x16``), MMA
# instruction names, and tensor-core input types (TensorFlow's profiler uses the same shape markers).
TENSOR_CORE_NAME = re.compile(
    r"hmma|wgmma|imma|gmma|tensorop|tensor\d+x\d+x\d+|884|1688|16816|16832|tf32|bf16|fp16|f16f16|_h\d{3,5}")
# (family, pattern): the first match names a conv kernel's algorithm.
ALGORITHM_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("layout conversion", TRANSPOSE_KERNEL),
    ("winograd", re.compile(r"winograd", re.I)),
    ("fft", re.compile(r"fft|flip_filter", re.I)),
    ("depthwise", re.compile(r"depthwise|dwconv", re.I)),
    ("direct", re.compile(r"dgrad_engine|wgrad_alg\d_engine|grouped_direct|direct", re.I)),
    ("implicit gemm", re.compile(r"implicit|igemm|scudnn|hcudnn|\d{3,5}cudnn|fprop|dgrad|wgrad", re.I)),
    ("explicit gemm", re.compile(r"explicit_convolve|im2col|gemm", re.I)),
    ("helper", re.compile(r"offsets|scalePackedTensor|splitKreduce|reduce_kernel|memset|fill", re.I)),
)

# (category, pattern) for the kernels between one conv and the next.
NEIGHBOUR_CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("batch norm", re.compile(r"\bbn_|batch_norm|batchnorm", re.I)),
    ("activation", re.compile(r"threshold|relu|clamp_min|silu|swish|gelu|sigmoid|hardtanh|tanh|elu\b", re.I)),
    ("add", re.compile(r"AddFunctor|add_kernel|CUDAFunctor_add", re.I)),  # residual adds, BN counters
    ("pooling", re.compile(r"pool", re.I)),
    ("layout conversion", TRANSPOSE_KERNEL),
    ("copy", re.compile(r"copy|memcpy", re.I)),
    ("other elementwise", re.compile(r"elementwise", re.I)),
)


NON_COMPUTE_FAMILIES = ("layout conversion", "helper")  # a conv layer's kernels that compute no convolution


@functools.cache  # each of a trace's few hundred kernel names is read once
def algorithm_family(name: str) -> str:
    """The algorithm family a conv kernel's name says it belongs to ("other" when none matches)."""
    return next((family for family, pattern in ALGORITHM_FAMILIES if pattern.search(name)), "other")


@functools.cache
def uses_tensor_cores(name: str) -> bool | None:
    """True when the kernel's name marks tensor-core (MMA) code, False when it names an FP32 SIMT kernel, else None."""
    lowered = name.lower()
    if SIMT_NAME.search(lowered):
        return False
    if TENSOR_CORE_NAME.search(lowered):
        return True
    return None


@functools.cache
def neighbour_category(name: str) -> str:
    return next((category for category, pattern in NEIGHBOUR_CATEGORIES if pattern.search(name)), "other")


@dataclass
class KernelShare:
    """Device time per step of one group of kernels, with their distinct names."""

    us_per_step: float = 0.0
    launches_per_step: float = 0.0
    names: list[str] = field(default_factory=list)


@dataclass
class LayerKernels:
    """A conv layer's kernels read by name: algorithm per pass, tensor-core share, and its neighbours."""

    algorithms: dict[tuple[str, str], KernelShare]  # (pass, family) -> share; pass is "forward" or "backward"
    tensor_core_us: float  # per step, compute kernels whose names mark tensor cores
    simt_us: float  # per step, compute kernels whose names mark FP32 SIMT code
    unknown_us: float  # per step, compute kernels whose names say neither
    neighbours: dict[str, KernelShare]  # category -> kernels after the forward, before the next conv

    @property
    def tensor_core_share(self) -> float | None:
        """Share of the layer's compute-kernel time the names put on tensor cores; None when no name tells."""
        known = self.tensor_core_us + self.simt_us
        return self.tensor_core_us / known if known else None

    @property
    def algorithms_by_time(self) -> list[tuple[tuple[str, str], KernelShare]]:
        """((pass, family), share) of each algorithm, the slowest first."""
        return _by_time(self.algorithms)

    @property
    def neighbours_by_time(self) -> list[tuple[str, KernelShare]]:
        """(category, share) of each neighbour, the slowest first."""
        return _by_time(self.neighbours)


def _by_time(shares: dict[Any, KernelShare]) -> list[tuple[Any, KernelShare]]:
    return sorted(shares.items(), key=lambda item: -item[1].us_per_step)


def layer_kernels(analysis: ConvAnalysis) -> dict[str, LayerKernels]:
    """Read each layer's device kernels (empty on a CPU-only trace): algorithms, tensor cores, neighbours."""
    steps = max(analysis.profile.step_count, 1)
    compute = EventKind.KERNEL
    owner = {k: layer for layer in analysis.layers for k in layer.kernels if k.kind is compute}
    if not owner:
        return {}
    launchers: dict[Op, str] = {}  # each event's pass, once

    def pass_of(kernel: Kernel) -> str:
        """Found when first asked, for the layers' kernels and those after a forward conv only: finding it for
        every kernel of the trace first took 0.05 s at 10x."""
        return launchers.get(kernel.launcher) or _pass(kernel, launchers)

    result = {layer.name: _own_kernels(layer, steps, pass_of) for layer in analysis.layers}
    for layer_name, kernels in _neighbour_runs(analysis, owner, pass_of).items():
        for kernel in kernels:
            share = result[layer_name].neighbours.setdefault(neighbour_category(kernel.name), KernelShare())
            _add(share, kernel, steps)
    return result


def _own_kernels(layer: ConvLayer, steps: int, pass_of: Callable[[Kernel], str]) -> LayerKernels:
    algorithms: dict[tuple[str, str], KernelShare] = {}
    tensor_core = simt = unknown = 0.0
    for kernel in layer.kernels:
        if kernel.kind is not EventKind.KERNEL:
            continue
        family = algorithm_family(kernel.name)
        _add(algorithms.setdefault((pass_of(kernel), family), KernelShare()), kernel, steps)
        if family in NON_COMPUTE_FAMILIES:
            continue
        on_tensor_cores = uses_tensor_cores(kernel.name)
        if on_tensor_cores is True:
            tensor_core += kernel.dur_us / steps
        elif on_tensor_cores is False:
            simt += kernel.dur_us / steps
        else:
            unknown += kernel.dur_us / steps
    return LayerKernels(algorithms=algorithms, tensor_core_us=tensor_core, simt_us=simt, unknown_us=unknown,
                        neighbours={})


def _add(share: KernelShare, kernel: Kernel, steps: int) -> None:
    share.us_per_step += kernel.dur_us / steps
    share.launches_per_step += 1 / steps
    if kernel.name not in share.names:
        share.names.append(kernel.name)


def _pass(kernel: Kernel, launchers: dict[Op, str]) -> str:
    """"backward" when the kernel's launcher or an event around it has a backward name, else "forward";
    ``launchers`` remembers the pass of each event on the way up, so each event is looked at once."""
    op = kernel.launcher
    if op is None:
        return "forward"
    below: list[Op] = []  # the events looked at on the way up and not yet remembered
    while True:
        known = launchers.get(op)
        if known is not None:
            break
        below.append(op)
        if _backward_name(op.name):
            known = "backward"
            break
        op = op.parent
        if op is None:
            known = "forward"
            break
    for event in below:
        launchers[event] = known
    return known


@functools.cache
def _backward_name(name: str) -> bool:
    return is_conv_backward_node(name) or "backward" in name.lower()


def _neighbour_runs(
    analysis: ConvAnalysis, owner: dict[Kernel, ConvLayer], pass_of: Callable[[Kernel], str]
) -> dict[str, list[Kernel]]:
    """Per layer, the non-conv kernels on the same stream after its forward kernels and before the next conv
    kernel, stopping at the first kernel launched from the backward pass."""
    by_stream: dict[tuple[int | None, int | None], list[Kernel]] = defaultdict(list)
    compute = EventKind.KERNEL
    for kernel in analysis.profile.kernels:
        if kernel.kind is compute:
            by_stream[(kernel.device, kernel.stream)].append(kernel)
    runs: dict[str, list[Kernel]] = defaultdict(list)
    for kernels in by_stream.values():
        kernels.sort(key=attrgetter("ts_us"))
        current: ConvLayer | None = None
        for kernel in kernels:
            layer = owner.get(kernel)
            if layer is not None:
                current = layer if pass_of(kernel) == "forward" else None
            elif current is not None:
                if pass_of(kernel) == "backward":
                    current = None
                else:
                    runs[current.name].append(kernel)
    return runs


@dataclass(frozen=True)
class KernelTotals:
    """Conv kernel time per step of all layers by pass and algorithm family, and the share on tensor cores."""

    tensor_core_share: float | None  # None when no kernel name says either way
    by_family_us: list[tuple[str, str, float]]  # (pass, family, time per step), largest first


def kernel_totals(kernels: dict[str, LayerKernels]) -> KernelTotals | None:
    """The layers' kernels summed (GPU traces only; None without device kernels)."""
    if not kernels:
        return None
    by_family: dict[tuple[str, str], float] = {}
    for layer in kernels.values():
        for key, share in layer.algorithms.items():
            by_family[key] = by_family.get(key, 0.0) + share.us_per_step
    known = sum(k.tensor_core_us + k.simt_us for k in kernels.values())
    return KernelTotals(
        tensor_core_share=sum(k.tensor_core_us for k in kernels.values()) / known if known else None,
        by_family_us=[(p, f, us) for (p, f), us in sorted(by_family.items(), key=lambda item: -item[1])],
    )
