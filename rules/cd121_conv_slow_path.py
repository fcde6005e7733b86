"""CD121 conv-slow-path: CPU convolutions that leave oneDNN for ATen's reference implementations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import backend_flags, float32_compute
from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer
from convdoctor.rules.base import Finding, Requirement, SavingBound, Severity

# ATen's reference (im2col + GEMM, or plain loops) convolutions on a CPU, as torch 2.13 names them in a trace. Checked
# with real captures: float16 and bfloat16 (without native bfloat16) Conv1d/Conv2d -> thnn_conv2d ->
# _slow_conv2d_forward; Conv3d -> slow_conv3d -> slow_conv3d_forward; dilated -> slow_conv_dilated2d/3d; transposed
# -> slow_conv_transpose2d/3d; float64 takes the same ones; so does float32 with torch.backends.mkldnn.enabled False
# (below NNPACK's batch size). float32 convs, NCHW or not, 1-3-D, grouped, dilated or transposed, run in oneDNN
# (aten::mkldnn_convolution, or no operator of its own for a transposed one).
SLOW_CONV_OPS = frozenset({
    "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::slow_conv3d", "aten::slow_conv3d_forward",
    "aten::slow_conv_dilated2d", "aten::slow_conv_dilated3d", "aten::slow_conv_transpose2d",
    "aten::slow_conv_transpose3d",
})
LOW_PRECISION = ("float16", "bfloat16")
FLOAT32_TOLERANCE = 1e-2  # float16 keeps 11 significant bits: a float32 run differs from it by its rounding
ONEDNN_TOLERANCE = 1e-4  # the same float32 convolution summed in another order

FLOAT32_SNIPPET = """\
model = model.float()                      # float32 convs run in oneDNN; float16 ones on ATen's reference path
out = model(x.float())
# on a CPU with native bfloat16 (AVX512-BF16, AMX), for half-width activations:
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = model(x.float())"""
ONEDNN_SNIPPET = """\
torch.backends.mkldnn.enabled = True       # the default: convolutions run in oneDNN"""
FLOAT64_SNIPPET = """\
model = model.float()                      # where float32's precision is enough: oneDNN has no float64 convs
out = model(x.float())"""


@dataclass(frozen=True)
class SlowLayer:
    """One conv layer on a reference path."""

    layer: str
    dtype: str
    implementation: str  # the innermost slow operator: aten::_slow_conv2d_forward, aten::slow_conv3d_forward ...
    ms_per_step: float


@dataclass(frozen=True)
class SlowPathEvidence:
    """The conv layers whose calls took ATen's reference implementations, and why they may have."""

    layers: tuple[SlowLayer, ...]  # slowest first
    conv_layers: int
    slow_ms_per_step: float
    slow_share: float  # of the step
    mkldnn_enabled: bool | None  # torch.backends.mkldnn.enabled at capture
    mkldnn_bf16_supported: bool | None
    mkldnn_fp16_supported: bool | None
    cause: str  # "dtype", "mkldnn disabled", "float64", "unknown"

    def message(self) -> str:
        first = self.layers[0]
        dtypes = sorted({layer.dtype for layer in self.layers})
        return (f"{len(self.layers)} of {self.conv_layers} conv layers leave oneDNN for ATen's reference path "
                f"({', '.join(dtypes)}): {self.slow_ms_per_step:.2f} ms, {self.slow_share:.0%} of the step; "
                f"slowest {first.layer} ({first.implementation}, {first.ms_per_step:.2f} ms)")


def slow_implementation(layer: ConvLayer) -> str | None:
    """The innermost reference operator the layer's calls took; None when none did."""
    slow = [name for name in layer.implementations if name in SLOW_CONV_OPS]
    return slow[-1] if slow else None


class ConvSlowPathRule:
    """Convolutions on a CPU that ran ATen's reference implementations instead of oneDNN."""

    id = "CD121"
    name = "conv-slow-path"
    summary = "CPU convs on ATen's reference path (thnn_conv2d, slow_conv3d): float16/float64 or oneDNN turned off"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    min_share = 0.02  # Options: smallest share of the step in slow-path conv layers that is reported
    doc = """\
## What it detects
Conv layers of a CPU trace whose calls took one of ATen's reference implementations instead of oneDNN
(`aten::mkldnn_convolution`): `aten::thnn_conv2d`/`aten::_slow_conv2d_forward` (Conv1d and Conv2d),
`aten::slow_conv3d`/`aten::slow_conv3d_forward`, `aten::slow_conv_dilated2d`/`3d`,
`aten::slow_conv_transpose2d`/`3d`, when those layers take at least `min_share` of the step. On torch 2.13
on a CPU a convolution goes there when its dtype is float16 (without AMX-FP16), bfloat16 (without native
bfloat16), or float64, or when `torch.backends.mkldnn.enabled` is False. float32 convolutions stay in oneDNN
whatever their layout: an NCDHW Conv3d runs `aten::mkldnn_convolution` too (channels_last_3d is CD101's matter),
and a ResNet-like float32 model stays quiet.

## Why it is slow
The reference paths unfold the input (im2col) and call a GEMM per sample, or loop in scalar code; float16 has
no vector arithmetic on most CPUs and is converted element by element. One float16 Conv2d (16->32 channels,
32x32, batch 4) took 58 ms there against 0.67 ms in float32 oneDNN, on one thread of an AVX2 EPYC (86x;
bfloat16 99x); a three-conv float16 model (tests/models/cd121_half_cnn.py) 2.3 ms against 0.36 ms.

## Example
```python
model = model.half()              # float16 "to save memory" on a CPU
out = model(x.half())             # every conv: thnn_conv2d -> _slow_conv2d_forward
```

## Use instead
```python
model = model.float()             # float32: oneDNN (jit/brgconv kernels)
out = model(x.float())
```
On a CPU with native bfloat16 (AVX512-BF16, AMX-BF16; CD119) run the float32 model under
`torch.autocast("cpu", dtype=torch.bfloat16)` for half-width activations. With oneDNN turned off, turn it on
(`torch.backends.mkldnn.enabled = True`, the default). For float64 there is no fast path: use float32 where its
precision is enough (the finding then has no candidate: precision is the model's choice).

## Evidence
Per conv layer, the conv operators nested in its forward calls below `aten::_convolution` (ConvLayer
`implementations`), its dtype and time per step; from the trace's convdoctor environment: `mkldnn_enabled`,
`mkldnn_bf16_supported`, `mkldnn_fp16_supported`.

## Options
`min_share` (fraction of step time, default 0.02): smallest share of the step spent in slow-path conv layers.
The float32 candidate's tolerance is 1e-2 (float16's own rounding, against which a float32 run is compared); the
oneDNN candidate's 1e-4. Which oneDNN implementation a float32 conv gets (jit, brgconv, or oneDNN's own `ref`)
is not in a trace; `ONEDNN_VERBOSE=1` prints it per call. On this rule's test machine every float32 conv shape
checked (2-D, 3-D NCDHW and channels_last_3d, dilated, transposed) ran `jit:avx2` or `brg_conv_fwd:avx2`.

## References
- https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/Convolution.cpp (`select_conv_backend`)
- https://oneapi-src.github.io/oneDNN/dev_guide_verbose.html
- https://pytorch.org/docs/stable/backends.html#torch-backends-mkldnn
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        environment = profile.environment
        if profile.has_device_events:
            return  # a GPU run: its convs are cuDNN's
        slow = [(layer, implementation) for layer in analysis.layers
                if (implementation := slow_implementation(layer)) is not None]
        if not slow:
            return
        slow_us = sum(layer.time_per_step_us for layer, _ in slow)
        share = analysis.share(slow_us)
        if share < self.min_share:
            return
        mkldnn = environment.mkldnn_enabled
        dtypes = {layer.dtype for layer, _ in slow}
        cause = ("mkldnn disabled" if mkldnn is False else "dtype" if dtypes & set(LOW_PRECISION)
                 else "float64" if dtypes == {"float64"} else "unknown")

        evidence = SlowPathEvidence(
            layers=tuple(SlowLayer(layer.name, layer.dtype, implementation, layer.time_per_step_us / 1e3)
                         for layer, implementation in slow),
            conv_layers=len(analysis.layers), slow_ms_per_step=slow_us / 1e3, slow_share=share,
            mkldnn_enabled=mkldnn, mkldnn_bf16_supported=environment.mkldnn_bf16_supported,
            mkldnn_fp16_supported=environment.mkldnn_fp16_supported, cause=cause)
        fix, advice, snippet, candidate = self._fix(cause, dtypes)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= 0.1 else Severity.INFO,
            evidence=evidence,
            fix=fix,
            advice=advice,
            snippet=snippet,
            layers=[layer.name for layer, _ in slow],
            # oneDNN takes a small part of it: at most all of it (capped: the traced layers can outlast the unprofiled
            # step the share is taken of)
            estimated_saving=min(1.0, analysis.saving_share(slow_us)),
            saving_bound=SavingBound.AT_MOST,
            candidate=candidate,
        )

    def _fix(self, cause: str, dtypes: set[str]) -> tuple[str, str, str, Candidate | None]:
        if cause == "mkldnn disabled":
            return ("Turn oneDNN back on (torch.backends.mkldnn.enabled = True)",
                    "torch.backends.mkldnn.enabled was False at capture: every CPU convolution fell back to ATen's "
                    "reference implementation (or NNPACK at larger batches). It is on by default.",
                    ONEDNN_SNIPPET,
                    Candidate(title="oneDNN enabled for the forward", transform=backend_flags(mkldnn_enabled=True),
                              numerics=NumericsContract.EXACT, tolerance=ONEDNN_TOLERANCE, stage=PlanStage.WRAPPER))
        if cause == "dtype":
            low = " and ".join(sorted(dtypes & set(LOW_PRECISION)))
            return ("Run the model in float32",
                    f"oneDNN has no {low} convolutions for this CPU (torch's mkldnn checks were false at capture), so "
                    "ATen ran its reference implementation, which is tens to hundreds of times slower than float32 "
                    "oneDNN. Convert the model and inputs to float32; on a CPU with native bfloat16 (AVX512-BF16, "
                    "AMX), bfloat16 autocast over the float32 model gives half-width activations on the fast path. "
                    "The candidate computes in float32 and casts outputs back to the input dtype.",
                    FLOAT32_SNIPPET,
                    Candidate(title="model computed in float32 (outputs cast back)", transform=float32_compute,
                              numerics=NumericsContract.APPROXIMATE, tolerance=FLOAT32_TOLERANCE,
                              stage=PlanStage.STRUCTURE))  # the dtype first: layout and wrappers work on float32
        if cause == "float64":
            return ("Use float32 where its precision is enough",
                    "oneDNN has no float64 convolutions: ATen runs its reference implementation. If float32's "
                    "precision is enough for this model, .float() moves the convolutions to oneDNN; no candidate is "
                    "measured, since the precision is the model's choice.",
                    FLOAT64_SNIPPET, None)
        return ("Find why these convolutions leave oneDNN",
                "The trace shows ATen's reference convolution for these layers although their dtype and the "
                "recorded oneDNN switch allow oneDNN; run one with ONEDNN_VERBOSE=1 and check the dtype, the "
                "layout and torch.backends.mkldnn flags.",
                ONEDNN_SNIPPET, None)
