"""CD107 grouped-conv: wide dense 2-D convolutions whose grouped version would cost a fraction of the FLOPs."""

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
# before: every output channel reads every input channel
conv = nn.Conv2d(256, 256, kernel_size=3, padding=1)
# after: 4 groups of 64 -> 64 channels; a quarter of the weights and FLOPs (retrain the model)
conv = nn.Conv2d(256, 256, kernel_size=3, padding=1, groups=4)"""


@dataclass(frozen=True)
class GroupedLayer:
    """A dense conv layer with its FLOPs and parameters, dense and grouped."""

    name: str
    share: float
    time_ms_per_step: float
    in_channels: int
    out_channels: int
    kernel: list[int]
    flops_per_call: int
    flops_per_call_after: int
    forward_flops_per_step: int
    params: int
    params_after: int


@dataclass(frozen=True)
class GroupedConvEvidence:
    """The dense conv layers that ``groups`` groups would cut to 1/groups of their FLOPs."""

    groups: int
    share: float
    forward_flops_per_step: int
    forward_flops_per_step_after: int
    predicted_flops_ratio: float
    layers: list[GroupedLayer]
    not_replaceable: dict[str, str | None]  # layer: why the candidate leaves it alone

    def message(self) -> str:
        g, top = self.groups, self.layers[0]
        kernel = "×".join(str(k) for k in top.kernel)
        first = (f"{top.name}: {top.share:.0%} of the step, {flops_si(top.flops_per_call)} "
                 f"per call in a dense {kernel} conv {top.in_channels}→{top.out_channels}; with groups={g} "
                 f"{flops_si(top.flops_per_call_after, top.flops_per_call)} (÷{g})")
        if len(self.layers) == 1:
            return first
        before = self.forward_flops_per_step
        return (f"{len(self.layers)} dense conv layers take {self.share:.0%} of the step, "
                f"{flops_si(before)} forward per step; "
                f"with groups={g} {flops_si(before / g, before)} (÷{g}); slowest {first}")


def grouped(groups: int) -> Callable[[nn.Conv2d], nn.Module]:
    """Build a freshly initialised nn.Conv2d like ``old`` but with ``groups`` groups."""

    def build(old: nn.Conv2d) -> nn.Module:
        from torch import nn

        new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                        padding=old.padding, dilation=old.dilation, groups=groups, bias=old.bias is not None,
                        padding_mode=old.padding_mode, device=old.weight.device, dtype=old.weight.dtype)
        return like(new, old)

    return build


def to_grouped(names: list[str], groups: int) -> Callable[[Workload], Workload]:
    """A transform that replaces the named nn.Conv2d layers of the (copied) workload with grouped ones."""

    def transform(workload: Workload) -> Workload:
        return replace_convs(workload, names, grouped(groups))

    return transform


class GroupedConvRule:
    """Wide dense k×k Conv2d layers that take a large share of the step, where a grouped conv cuts FLOPs ÷g."""

    id = "CD107"
    name = "grouped-conv"
    summary = "Wide dense k×k convolutions dominate the step; a grouped conv would need a fraction of the FLOPs"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.MODULE_SCOPES})
    groups = 4  # Options: groups of the proposed conv
    min_share = 0.05  # Options: smallest share of step time of a layer for it to be proposed
    min_channels_per_group = 16  # Options: smallest input and output channels per group after grouping
    doc = """\
## What it detects
`nn.Conv2d` layers with one group (every output channel reads every input channel) and a spatial kernel
larger than 1×1, whose input and output channels both divide by `groups` into at least
`min_channels_per_group` channels per group, and that each take at least `min_share` of the step time.
1×1 convolutions are left alone: mixing channels is their whole job, and grouping them cuts the groups off
from each other (ShuffleNet needs a channel shuffle to make up for it). Functional convs (`F.conv2d` in a
forward), transposed, 1-D and 3-D convs and `nn.Conv2d` subclasses are not proposed.

## Why it is slow
A dense k×k conv costs 2·N·K·C·k²·P·Q FLOPs and K·C·k² weights: both grow with the product of the input
and output widths. With `groups=g` each output channel reads only C/g input channels, so the layer needs
1/g of the FLOPs and of the weights. This is an architecture change: the grouped model computes something
else and must be retrained, and its accuracy is unknown until it is. Fewer FLOPs do not always mean less
time either: grouped kernels are less tuned and do less work per byte moved, which is why convdoctor
measures the candidate before saying anything about speed.

## Example
```python
block = nn.Sequential(
    nn.Conv2d(256, 256, kernel_size=3, padding=1, bias=False),
    nn.BatchNorm2d(256), nn.ReLU(),
)
```

## Use instead
```python
block = nn.Sequential(
    nn.Conv2d(256, 256, kernel_size=3, padding=1, groups=4, bias=False),  # ResNeXt-style
    nn.BatchNorm2d(256), nn.ReLU(),
)
```
Keep the 1×1 convolutions around it dense (as ResNeXt does), or add a channel shuffle between grouped
layers (as ShuffleNet does), so that information still flows between groups; then retrain.

## Evidence
Each conv layer's module class and qualified name (convdoctor's module scopes), its input and weight shapes,
groups, stride, padding and dilation (`Input Dims` and `Concrete Inputs` of `aten::convolution`), its FLOPs
per call computed from those shapes, and its time per step with its share of the step. The candidate's
FLOPs and parameters, before and after, are counted by running both models under `FlopCounterMode`.

## Options
`groups` (count, default 4): groups of the proposed conv; it must divide both the input and output channels.
`min_share` (fraction of step time per layer, default 0.05): a layer under it is not proposed.
`min_channels_per_group` (channels, default 16): smallest input and output channels per group after
grouping; narrower groups run memory-bound and lose most of what they save.

## References
- https://arxiv.org/abs/1611.05431 (Xie et al., Aggregated Residual Transformations, ResNeXt)
- https://arxiv.org/abs/1707.01083 (Zhang et al., ShuffleNet: grouped 1×1 convs and channel shuffle)
- https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html (the `groups` argument)
"""

    def selected(self, layer: ConvLayer) -> bool:
        """Whether the layer's shapes and time make it a candidate for grouping (replaceable or not)."""
        if not is_dense_conv2d(layer) or math.prod(layer.weight_shape[2:]) <= 1:
            return False
        in_channels, out_channels = layer.input_shape[1], layer.weight_shape[0]
        g = self.groups
        return (g > 1 and in_channels % g == 0 and out_channels % g == 0
                and min(in_channels, out_channels) // g >= self.min_channels_per_group)

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        heavy = [layer for layer in analysis.layers
                 if self.selected(layer) and analysis.share(layer.time_per_step_us) >= self.min_share]
        chosen = [layer for layer in heavy if not_replaceable(layer) is None]
        skipped = {layer.name: not_replaceable(layer) for layer in heavy if not_replaceable(layer) is not None}
        if not chosen:
            return
        g = self.groups
        rows = [self._row(analysis, layer) for layer in chosen]
        before = sum(row.forward_flops_per_step for row in rows)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix=f"Use grouped convolutions (groups={g}) and retrain",
            advice=(f"This changes the model: a conv with groups={g} has 1/{g} of the weights, so the network must "
                    "be retrained and its accuracy is unknown until it is. ResNeXt groups its 3×3 convs and keeps "
                    "the 1×1 convs around them dense; ShuffleNet adds a channel shuffle between grouped layers so "
                    "that information still crosses groups. Try it where the measured speedup is worth a "
                    "retraining run, and compare accuracy on your validation set."),
            snippet=SNIPPET,
            layers=[layer.name for layer in chosen],
            evidence=GroupedConvEvidence(
                groups=g,
                share=sum(row.share for row in rows),
                forward_flops_per_step=before,
                forward_flops_per_step_after=before // g,
                predicted_flops_ratio=1 / g,
                layers=rows,
                not_replaceable=skipped,
            ),
            estimated_saving=None,  # a FLOP cut bounds no time: grouped kernels may be slower per FLOP
            candidate=Candidate(
                title=f"grouped convs (groups={g}), fresh weights",
                transform=to_grouped([layer.name for layer in chosen], g),
                numerics=NumericsContract.ARCHITECTURE,
                tolerance=0.0,  # not applied: an architecture change computes something else
            ),
        )

    def _row(self, analysis: ConvAnalysis, layer: ConvLayer) -> GroupedLayer:
        g = self.groups
        weights = math.prod(layer.weight_shape)
        return GroupedLayer(
            name=layer.name,
            share=analysis.share(layer.time_per_step_us),
            time_ms_per_step=layer.time_per_step_us / 1e3,
            in_channels=layer.input_shape[1],
            out_channels=layer.weight_shape[0],
            kernel=list(layer.weight_shape[2:]),
            flops_per_call=layer.flops,
            flops_per_call_after=layer.flops // g,
            forward_flops_per_step=round(layer.flops * layer.calls_per_step),
            params=weights + layer.bias_numel,
            params_after=weights // g + layer.bias_numel,
        )
