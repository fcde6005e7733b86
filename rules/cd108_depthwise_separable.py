"""CD108 depthwise-separable: dense k×k convolutions that a depthwise + pointwise pair would replace."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
from convdoctor.analyzer.candidates.conv_replacement import like, replace_convs
from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer
from convdoctor.rules.base import Finding, Requirement, Severity
from convdoctor.rules.shared.conv_choice import flops_si, is_dense_conv2d, not_replaceable

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    from torch import nn

    from convdoctor.analyzer.capture.workload import Workload

SNIPPET = """\
# before: a dense 3x3 conv, C -> K channels
conv = nn.Conv2d(C, K, kernel_size=3, padding=1)
# after: one 3x3 filter per input channel, then a 1x1 conv that mixes channels (retrain the model)
conv = nn.Sequential(
    nn.Conv2d(C, C, kernel_size=3, padding=1, groups=C, bias=False),  # depthwise
    nn.Conv2d(C, K, kernel_size=1),                                   # pointwise
)"""


@dataclass(frozen=True)
class SeparableLayer:
    """A dense k×k conv layer with its FLOPs and parameters, dense and as a depthwise + pointwise pair."""

    name: str
    share: float
    time_ms_per_step: float
    in_channels: int
    out_channels: int
    kernel: list[int]
    predicted_flops_ratio: float
    flops_per_call: int
    flops_per_call_after: int
    forward_flops_per_step: int
    forward_flops_per_step_after: int
    params: int
    params_after: int


@dataclass(frozen=True)
class DepthwiseSeparableEvidence:
    """The dense k×k conv layers that depthwise + pointwise pairs would replace, and their FLOPs before and after."""

    share: float
    forward_flops_per_step: int
    forward_flops_per_step_after: int
    predicted_flops_ratio: float | None  # None when the per-step FLOPs round to 0
    layers: list[SeparableLayer]
    not_replaceable: dict[str, str | None]  # layer: why the candidate leaves it alone

    def message(self) -> str:
        top = self.layers[0]
        kernel = "×".join(str(k) for k in top.kernel)
        message = (f"{top.name}: {top.share:.0%} of the step, {flops_si(top.flops_per_call)} "
                   f"per call in a dense {kernel} conv {top.in_channels}→{top.out_channels}; "
                   f"depthwise + pointwise "
                   f"{flops_si(top.flops_per_call_after, top.flops_per_call)} "
                   f"({top.predicted_flops_ratio:.3f}× the FLOPs)")
        if len(self.layers) == 1:
            return message
        before, after = self.forward_flops_per_step, self.forward_flops_per_step_after
        ratio = self.predicted_flops_ratio
        return (f"{len(self.layers)} dense conv layers take {self.share:.0%} of the step, "
                f"{flops_si(before)} forward per step; "
                f"depthwise + pointwise {flops_si(after, before)}"
                f"{f' ({ratio:.3f}×)' if ratio is not None else ''}; slowest {message}")


def separable_flops_ratio(in_channels: int, out_channels: int, kernel: list[int]) -> float:
    """FLOPs of depthwise k×k + pointwise 1×1 over the dense k×k conv: (C·k² + C·K) / (C·K·k²)."""
    area = math.prod(kernel)
    return (in_channels * area + in_channels * out_channels) / (in_channels * out_channels * area)


def separable(old: nn.Conv2d) -> nn.Module:
    """A freshly initialised depthwise k×k (same stride/padding/dilation) + pointwise 1×1 pair replacing ``old``."""
    from torch import nn

    factory = {"device": old.weight.device, "dtype": old.weight.dtype}
    depthwise = nn.Conv2d(old.in_channels, old.in_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                          dilation=old.dilation, groups=old.in_channels, bias=False, padding_mode=old.padding_mode,
                          **factory)
    pointwise = nn.Conv2d(old.in_channels, old.out_channels, 1, bias=old.bias is not None, **factory)
    return like(nn.Sequential(depthwise, pointwise), old)


def to_separable(names: list[str]) -> Callable[[Workload], Workload]:
    """A transform that replaces the named nn.Conv2d layers of the (copied) workload with separable pairs."""

    def transform(workload: Workload) -> Workload:
        return replace_convs(workload, names, separable)

    return transform


class DepthwiseSeparableRule:
    """Dense k×k Conv2d layers that dominate the step, where depthwise + pointwise would cut FLOPs by ~k²."""

    id = "CD108"
    name = "depthwise-separable"
    summary = "Dense k×k convolutions dominate the step; depthwise + pointwise would need far fewer FLOPs"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.MODULE_SCOPES})
    min_share = 0.10  # Options: smallest share of step time of a layer for it to be proposed
    min_in_channels = 16  # Options: smallest input channels of a layer for it to be proposed
    min_kernel = 3  # Options: smallest kernel height and width
    max_flops_ratio = 0.5  # Options: largest predicted FLOPs after/before for a layer to be proposed
    doc = """\
## What it detects
`nn.Conv2d` layers with one group, a kernel at least `min_kernel` high and wide (3×3, 5×5, 7×7 …), at least
`min_in_channels` input channels, that each take at least `min_share` of the step time and for which the
depthwise-separable pair would need at most `max_flops_ratio` of the FLOPs. Layers that are already
depthwise (groups = input channels) or pointwise (1×1), functional convs (`F.conv2d` in a forward),
transposed, 1-D and 3-D convs and `nn.Conv2d` subclasses are not proposed.

## Why it is slow
A dense k×k conv from C to K channels costs 2·N·K·C·k²·P·Q FLOPs: it filters space and mixes channels in
one step. A depthwise k×k conv (one filter per input channel, `groups=C`) followed by a pointwise 1×1 conv
(C→K) does the two separately, for (C·k² + C·K)/(C·K·k²) = 1/K + 1/k² of the FLOPs and of the weights —
about 8-9× fewer for a 3×3 conv with 128 output channels. This is an architecture change: the model computes
something else, must be retrained, and its accuracy is unknown until it is. And fewer FLOPs may not mean less
time: a depthwise conv does k² multiply-adds per value it reads, so on CPUs and GPUs it is memory-bound and
its kernels reach a small fraction of peak, while the pointwise conv writes and reads one more activation
tensor. That is why convdoctor measures the candidate instead of predicting a speedup from FLOPs.

## Example
```python
conv = nn.Conv2d(64, 128, kernel_size=3, padding=1)
```

## Use instead
```python
conv = nn.Sequential(
    nn.Conv2d(64, 64, kernel_size=3, padding=1, groups=64, bias=False),  # depthwise
    nn.BatchNorm2d(64), nn.ReLU(),                                       # MobileNet puts BN + ReLU here
    nn.Conv2d(64, 128, kernel_size=1),                                   # pointwise
)
```
Then retrain, and compare accuracy on your validation set (MobileNet, Xception and EfficientNet are built
from such blocks).

## Evidence
Each conv layer's module class and qualified name (convdoctor's module scopes), its input and weight shapes,
groups, stride, padding and dilation (`Input Dims` and `Concrete Inputs` of `aten::convolution`), its FLOPs
per call computed from those shapes, and its time per step with its share of the step. The predicted FLOPs
ratio comes from the shapes; the candidate's FLOPs and parameters, before and after, are counted by running
both models under `FlopCounterMode`.

## Options
`min_share` (fraction of step time per layer, default 0.10): a layer under it is not proposed.
`min_in_channels` (channels, default 16): narrower layers gain little and lose most capacity when split.
`min_kernel` (pixels, default 3): smallest kernel height and width; 1×1 convs are pointwise already.
`max_flops_ratio` (fraction, default 0.5): largest predicted FLOPs of the pair over the dense conv's.

## References
- https://arxiv.org/abs/1704.04861 (Howard et al., MobileNets: depthwise separable convolutions)
- https://arxiv.org/abs/1610.02357 (Chollet, Xception)
- https://arxiv.org/abs/1801.04381 (Sandler et al., MobileNetV2)
"""

    def selected(self, layer: ConvLayer) -> bool:
        """Whether the layer's shapes make it a candidate for a separable pair (replaceable or not)."""
        if not is_dense_conv2d(layer) or min(layer.weight_shape[2:]) < self.min_kernel or not layer.flops:
            return False  # (a layer of empty tensors, 0 FLOPs, has nothing to save)
        in_channels, out_channels = layer.input_shape[1], layer.weight_shape[0]
        return (in_channels >= self.min_in_channels and out_channels >= 1
                and separable_flops_ratio(in_channels, out_channels, layer.weight_shape[2:]) <= self.max_flops_ratio)

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        heavy = [layer for layer in analysis.layers
                 if self.selected(layer) and analysis.share(layer.time_per_step_us) >= self.min_share]
        chosen = [layer for layer in heavy if not_replaceable(layer) is None]
        skipped = {layer.name: not_replaceable(layer) for layer in heavy if not_replaceable(layer) is not None}
        if not chosen:
            return
        rows = [self._row(analysis, layer) for layer in chosen]
        before = sum(row.forward_flops_per_step for row in rows)
        after = sum(row.forward_flops_per_step_after for row in rows)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Replace dense k×k convolutions with depthwise + pointwise pairs and retrain",
            advice=("This changes the model: a depthwise k×k conv (groups = input channels) followed by a 1×1 "
                    "pointwise conv has far fewer weights, so the network must be retrained and its accuracy is "
                    "unknown until it is (MobileNet-style; MobileNet adds BatchNorm + ReLU after the depthwise "
                    "conv). Fewer FLOPs may not mean faster: depthwise convs are memory-bound on CPUs and GPUs and "
                    "the pair moves one more activation tensor, so trust the measured speedup below, not the "
                    "FLOPs ratio."),
            snippet=SNIPPET,
            layers=[layer.name for layer in chosen],
            evidence=DepthwiseSeparableEvidence(
                share=sum(row.share for row in rows),
                forward_flops_per_step=before,
                forward_flops_per_step_after=after,
                predicted_flops_ratio=after / before if before else None,  # before: rounded per step, may be 0
                layers=rows,
                not_replaceable=skipped,
            ),
            estimated_saving=None,  # a FLOP cut bounds no time: depthwise kernels are memory-bound
            candidate=Candidate(
                title="depthwise + pointwise convs, fresh weights",
                transform=to_separable([layer.name for layer in chosen]),
                numerics=NumericsContract.ARCHITECTURE,
                tolerance=0.0,  # not applied: an architecture change computes something else
            ),
        )

    def _row(self, analysis: ConvAnalysis, layer: ConvLayer) -> SeparableLayer:
        batch, in_channels = layer.input_shape[0], layer.input_shape[1]
        out_channels, kernel = layer.weight_shape[0], list(layer.weight_shape[2:])
        assert layer.output_shape is not None and layer.flops is not None  # is_dense_conv2d checked both
        area, pixels = math.prod(kernel), math.prod(layer.output_shape[2:])
        after = 2 * batch * pixels * (in_channels * area + in_channels * out_channels)  # depthwise + pointwise
        return SeparableLayer(
            name=layer.name,
            share=analysis.share(layer.time_per_step_us),
            time_ms_per_step=layer.time_per_step_us / 1e3,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            predicted_flops_ratio=separable_flops_ratio(in_channels, out_channels, kernel),
            flops_per_call=layer.flops,
            flops_per_call_after=after,
            forward_flops_per_step=round(layer.flops * layer.calls_per_step),
            forward_flops_per_step_after=round(after * layer.calls_per_step),
            params=math.prod(layer.weight_shape) + layer.bias_numel,
            params_after=in_channels * area + in_channels * out_channels + layer.bias_numel,
        )
