"""CD117 stride-dilation: full-resolution convs whose output a pooling halves at once, and slow dilated convs."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
from convdoctor.analyzer.candidates.conv_replacement import like
from convdoctor.analyzer.candidates.surgery import replace_module
from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer
from convdoctor.analyzer.trace.profile import EventKind, Op
from convdoctor.rules.base import Finding, Requirement, Severity
from convdoctor.rules.shared.conv_choice import flops_si, is_dense_conv2d, not_replaceable

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    from convdoctor.analyzer.capture.workload import Workload

POOL_CLASSES = ("MaxPool2d", "AvgPool2d")
POOL_OPS = ("aten::max_pool2d", "aten::avg_pool2d", "aten::mkldnn_max_pool2d")
# Modules that may sit between the conv and the pool: per-element or per-channel, so the pool could move before them.
PASS_THROUGH = frozenset({"ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Hardswish", "Mish", "BatchNorm2d"})

SNIPPET = """\
# before: full-resolution conv, then a pooling throws 3 of every 4 outputs away
self.conv = nn.Conv2d(64, 128, 3, padding=1)
self.pool = nn.MaxPool2d(2)
# after: the conv computes only the outputs that are kept (retrain the model)
self.conv = nn.Conv2d(64, 128, 3, padding=1, stride=2)
self.pool = nn.Identity()"""


@dataclass(frozen=True)
class ConvPool:
    """A stride-1 conv module whose every call is followed, past per-element modules only, by a 2×2/2 pooling."""

    conv: str
    pool: str
    pool_class: str
    between: tuple[str, ...]  # module classes between them (ReLU, BatchNorm2d…)


@dataclass(frozen=True)
class ConvPoolRow:
    """A conv -> pool pair as the report shows it."""

    conv: str
    pool: str
    pool_class: str
    between: list[str]  # module classes between them
    input_shape: list[int]  # of the conv
    flops_per_call: int | None  # forward, of the conv
    flops_per_call_strided: int  # forward, of the conv at stride 2
    share: float  # of step time, the conv's


@dataclass(frozen=True)
class ConvPoolEvidence:
    """Convs at full resolution whose output a 2×2 pooling quarters, and their FLOPs at stride 2."""

    pairs: list[ConvPoolRow]  # the first named in the message
    share: float  # of step time, all the pairs' convs
    forward_flops_per_step: float
    forward_flops_per_step_strided: float
    not_replaceable: dict[str, str | None]  # conv -> why a stride-2 conv cannot replace it

    def message(self) -> str:
        first, others = self.pairs[0], len(self.pairs) - 1
        more = f" and {others} more pair{'s' if others > 1 else ''}" if others else ""
        before, after = self.forward_flops_per_step, self.forward_flops_per_step_strided
        return (f"{first.conv} -> {first.pool}{more}: convs at full resolution ({self.share:.0%} of the step, "
                f"{flops_si(before)} per step) whose outputs a 2×2 pooling quarters; stride 2 needs "
                f"{flops_si(after, before)}")


@dataclass(frozen=True)
class DilatedLayer:
    """A dilated conv and its GFLOP/s against the undilated convs' median."""

    name: str
    dilation: list[int]
    gflops: float
    ratio_to_undilated: float
    share: float  # of step time


@dataclass(frozen=True)
class DilationEvidence:
    """Dilated convs that reach a fraction of the undilated convs' median GFLOP/s."""

    undilated_median_gflops: float
    undilated_layers: int
    slow_dilated: list[DilatedLayer]  # the first named in the message

    def message(self) -> str:
        top = self.slow_dilated[0]
        return (f"{top.name}: dilation {top.dilation} runs at {top.gflops:.1f} GFLOP/s, "
                f"{top.ratio_to_undilated:.0%} of the median {self.undilated_median_gflops:.1f} GFLOP/s of the "
                f"{self.undilated_layers} undilated convs in this run")


def strided(conv_names: list[str], pool_names: list[str]) -> Callable[[Workload], Workload]:
    """A transform: each named conv gets stride 2 (same weights, to be retrained) and each named pool is removed."""

    def transform(workload: Workload) -> Workload:
        from torch import nn

        model = workload.model
        for conv_name, pool_name in zip(conv_names, pool_names):
            old = model.get_submodule(conv_name)
            if type(old) is not nn.Conv2d:
                raise TypeError(f"{conv_name} is a {type(old).__name__}, not an nn.Conv2d")
            new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, stride=2, padding=old.padding,
                            dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
                            padding_mode=old.padding_mode, device=old.weight.device, dtype=old.weight.dtype)
            new.load_state_dict(old.state_dict())
            replace_module(model, conv_name, like(new, old))
            replace_module(model, pool_name, nn.Identity())
        return replace(workload, model=model)

    return transform


def conv_pool_pairs(analysis: ConvAnalysis) -> list[ConvPool]:
    """Stride-1 'same' 2-D conv modules followed in every call by a 2×2, stride-2, unpadded MaxPool2d/AvgPool2d."""
    layers = {layer.name: layer for layer in analysis.layers}
    calls: dict[str, list[Op]] = {}
    for op in analysis.profile.scope_ops:
        if op.scope.qualified_name in layers:
            calls.setdefault(op.scope.qualified_name, []).append(op)
    pairs = []
    for name, conv_calls in calls.items():
        layer = layers[name]
        if not _full_resolution(layer):
            continue
        follow = {_pool_after(call) for call in conv_calls}
        if len(follow) == 1 and None not in follow:
            pool, pool_class, between = follow.pop()
            pairs.append(ConvPool(conv=name, pool=pool, pool_class=pool_class, between=between))
    return pairs


def _full_resolution(layer: ConvLayer) -> bool:
    """A dense stride-1 2-D conv whose output has its input's even height and width (a 'same' conv)."""
    return (is_dense_conv2d(layer) and layer.stride == [1, 1] and layer.output_shape is not None
            and layer.output_shape[2:] == layer.input_shape[2:] and all(d % 2 == 0 for d in layer.input_shape[2:]))


def _pool_after(conv_call: Op) -> tuple[str, str, tuple[str, ...]] | None:
    """(pool name, class, classes between) when the siblings after this conv call reach a 2×2/2 pooling."""
    siblings = conv_call.parent.children if conv_call.parent is not None else []
    index = next((i for i, s in enumerate(siblings) if s is conv_call), len(siblings))
    between: list[str] = []
    for sibling in siblings[index + 1:]:
        if sibling.scope is None:
            return None  # a bare operator in between: the trace cannot say what it does to the shape
        cls = sibling.scope.class_name
        if cls in POOL_CLASSES:
            return (sibling.scope.qualified_name, cls, tuple(between)) if _halves(sibling) else None
        if cls not in PASS_THROUGH:
            return None
        between.append(cls)
    return None


def _halves(pool_call: Op) -> bool:
    """The pooling op has a 2×2 window, stride 2 and no padding (its ``Concrete Inputs``)."""
    op = next((o for o in pool_call.descendants() if o.kind is EventKind.CPU_OP and o.name in POOL_OPS), None)
    if op is None or len(op.concrete_inputs) < 4:
        return False
    kernel, stride, padding = (_ints(v) for v in op.concrete_inputs[1:4])
    stride = stride or kernel  # an empty stride means the kernel size
    return kernel in ([2], [2, 2]) and stride in ([2], [2, 2]) and padding in ([], [0], [0, 0])


def _ints(value: Any) -> list[int] | None:
    try:
        parsed = json.loads(value) if isinstance(value, str) and value else []
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(v, int) for v in parsed) else None


def achieved_gflops(layer: ConvLayer) -> float | None:
    """Forward GFLOP/s of a layer over its profiled calls."""
    if not layer.flops or layer.forward_us <= 0 or not layer.calls:
        return None
    return layer.flops * layer.calls / (layer.forward_us * 1e3)


class StrideDilationRule:
    """Convs computed at full resolution only for a pooling to drop 3/4 of the outputs; dilated convs far slower
    per FLOP than the undilated convs of the same run."""

    id = "CD117"
    name = "stride-dilation"
    summary = "Conv then 2×2 pooling: a stride-2 conv computes 1/4 of the FLOPs; slow large-dilation convs"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.MODULE_SCOPES})
    min_share = 0.05  # Options: smallest share of step time of conv+pool layers (a) for the finding
    min_dilation = 4  # Options: (b) dilations from this are compared against the undilated convs
    max_rate_ratio = 0.5  # Options: (b) a dilated conv below this fraction of the undilated median GFLOP/s is slow
    doc = """\
## What it detects
(a) A stride-1 `nn.Conv2d` whose output keeps its input's (even) height and width, and that is followed in
every call, under the same parent module, by a `MaxPool2d`/`AvgPool2d` with a 2×2 window, stride 2 and no
padding, with only per-element or per-channel modules in between (ReLU and friends, BatchNorm2d); the pairs
together take at least `min_share` of the step. (b) Convs with a dilation of `min_dilation` or more whose
achieved GFLOP/s (forward FLOPs over forward time) is below `max_rate_ratio` times the median of the
undilated convs in the same run.

## Why it is slow
(a) The conv computes every output position and the pooling keeps one in four (or averages four into one):
three quarters of the conv's FLOPs, and the write and read of a full-resolution activation, go into outputs
that are thrown away. A stride-2 conv downsamples in the same place at a quarter of the FLOPs, as ResNet and
most modern networks do. It is a different model (learned downsampling instead of max/average), so it needs
retraining. (b) A dilated conv reads its input at a gather pattern that many libraries implement with
im2col copies or slower kernels; far below the rate of undilated convs, the layer is paying for the
dilation rather than for its FLOPs.

## Example
```python
self.conv = nn.Conv2d(64, 128, 3, padding=1)
self.pool = nn.MaxPool2d(2)
x = self.pool(torch.relu(self.conv(x)))
```

## Use instead
```python
self.conv = nn.Conv2d(64, 128, 3, padding=1, stride=2)   # then retrain
x = torch.relu(self.conv(x))
```
For slow dilated convs: try channels_last, a smaller dilation with a larger stride elsewhere, or a stack of
undilated convs with the same receptive field, and measure.

## Evidence
The module scopes of the trace: the order of module calls under each parent, their classes, and the pooling
op's kernel, stride and padding (`Concrete Inputs` of `aten::max_pool2d`/`aten::avg_pool2d`); each conv
layer's input, weight and output shapes, stride, padding and dilation, its forward FLOPs and forward time
(achieved GFLOP/s) and its share of the step. The candidate (a) is measured on the whole model and its FLOPs
and parameters counted before and after under `FlopCounterMode`.

## Options
`min_share` (fraction of step time, default 0.05): smallest share of the step in conv+pool convs for (a).
`min_dilation` (default 4): smallest dilation compared in (b).
`max_rate_ratio` (fraction, default 0.5): (b) reports a dilated conv whose GFLOP/s is below this fraction of
the median GFLOP/s of the undilated convs of the run.

## References
- https://arxiv.org/abs/1412.6806 (Springenberg et al., Striving for Simplicity: strided convs instead of pooling)
- https://arxiv.org/abs/1512.03385 (He et al., ResNet: stride-2 convs for downsampling)
- https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html (stride, dilation)
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        finding = self._conv_pool(analysis)
        if finding is not None:
            yield finding
        finding = self._dilation(analysis)
        if finding is not None:
            yield finding

    def _conv_pool(self, analysis: ConvAnalysis) -> Finding | None:
        layers = {layer.name: layer for layer in analysis.layers}
        pairs = conv_pool_pairs(analysis)
        share = sum(analysis.share(layers[p.conv].time_per_step_us) for p in pairs)
        if not pairs or share < self.min_share:
            return None
        chosen = [p for p in pairs if not_replaceable(layers[p.conv]) is None]
        rows = [ConvPoolRow(p.conv, p.pool, p.pool_class, list(p.between), layers[p.conv].input_shape,
                            layers[p.conv].flops, _strided_flops(layers[p.conv]),
                            analysis.share(layers[p.conv].time_per_step_us)) for p in pairs]
        before = sum(r.flops_per_call * layers[r.conv].calls_per_step for r in rows)
        after = sum(r.flops_per_call_strided * layers[r.conv].calls_per_step for r in rows)
        return Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Downsample with a stride-2 conv instead of conv + pooling, and retrain",
            advice=("This changes the model: the conv learns its downsampling instead of taking the max or mean, so "
                    "the network must be retrained and its accuracy checked. ResNet-style networks downsample this "
                    "way. The measurement below is the speed of the changed model, not its accuracy."),
            snippet=SNIPPET,
            layers=[p.conv for p in pairs],
            evidence=ConvPoolEvidence(
                pairs=rows, share=share, forward_flops_per_step=before, forward_flops_per_step_strided=after,
                not_replaceable={p.conv: not_replaceable(layers[p.conv]) for p in pairs if p not in chosen}),
            estimated_saving=None,  # FLOPs bound no time: the measurement speaks
            candidate=None if not chosen else Candidate(
                title=f"stride-2 convs instead of conv + pooling ({len(chosen)} pair{'s' if len(chosen) > 1 else ''})",
                transform=strided([p.conv for p in chosen], [p.pool for p in chosen]),
                numerics=NumericsContract.ARCHITECTURE,
            ),
        )

    def _dilation(self, analysis: ConvAnalysis) -> Finding | None:
        rates = {layer.name: achieved_gflops(layer) for layer in analysis.layers}
        plain = [rates[layer.name] for layer in analysis.layers
                 if layer.dilation and all(d == 1 for d in layer.dilation) and rates[layer.name]]
        dilated = [layer for layer in analysis.layers
                   if layer.dilation and max(layer.dilation) >= self.min_dilation and rates[layer.name]]
        if not plain or not dilated:
            return None
        reference = statistics.median(plain)
        slow = [layer for layer in dilated if rates[layer.name] < self.max_rate_ratio * reference]
        if not slow:
            return None
        rows = [DilatedLayer(layer.name, layer.dilation, rates[layer.name], rates[layer.name] / reference,
                             analysis.share(layer.time_per_step_us)) for layer in slow]
        return Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=Severity.INFO,
            fix="Check the dilated convs' kernels; try channels_last or an undilated equivalent",
            advice=("Dilated convs often fall back to slower kernels. This is evidence only, with no automatic "
                    "candidate: try channels_last, a different dilation/stride split, or a stack of small "
                    "undilated convs with the same receptive field, and measure it."),
            snippet="model = model.to(memory_format=torch.channels_last)\nx = x.contiguous(memory_format=torch."
                    "channels_last)  # then profile again",
            layers=[row.name for row in rows],
            evidence=DilationEvidence(undilated_median_gflops=reference, undilated_layers=len(plain),
                                      slow_dilated=rows),
        )


def _strided_flops(layer: ConvLayer) -> int:
    """Forward FLOPs of the same conv at stride 2: a quarter of the output positions (even sizes, 'same' padding)."""
    return (layer.flops or 0) // 4
