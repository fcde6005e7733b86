"""CD114 inefficient-depthwise: memory-bound depthwise/grouped convs that run far below the run's dense throughput."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer, MemoryFormat
from convdoctor.rules.base import Finding, Requirement, Severity

SNIPPET = """\
# depthwise convs are memory-bound: give them the NHWC kernels and fuse what follows them
model = model.to(memory_format=torch.channels_last)
x = x.contiguous(memory_format=torch.channels_last)
model = torch.compile(model)  # fuses the BN/activation after each depthwise conv into fewer memory passes
out = model(x)"""

NO_CANDIDATE_CHANNELS_LAST = (
    "No candidate: these layers already run in channels_last, and what is left (fusing them with the next pointwise "
    "conv or activation, fewer and wider blocks) is a compile or design choice that convdoctor does not make for you")
NO_CANDIDATE_OTHER = (
    "No candidate: channels_last applies to 4-D/5-D activations in NCHW, and none of these layers has one")
FORMAT_WORDS = {MemoryFormat.CONTIGUOUS: "in NCHW", MemoryFormat.CHANNELS_LAST: "already in channels_last"}


def achieved_gflops(layer: ConvLayer) -> float | None:
    """Forward GFLOP per second of the layer's time per step (flops × calls / time); None when either is unknown.

    In a training step the time includes the backward pass: the figure compares layers of one run, not a peak.
    """
    if not layer.flops or layer.time_per_step_us <= 0:
        return None
    return layer.flops * layer.calls_per_step / layer.time_per_step_us / 1e3  # FLOP/us = MFLOP/s; /1e3 → GFLOP/s


def is_grouped(layer: ConvLayer) -> bool:
    return layer.groups is not None and layer.groups > 1


def is_depthwise(layer: ConvLayer) -> bool:
    """One group per input channel (a channel multiplier may make more outputs than inputs)."""
    return is_grouped(layer) and len(layer.input_shape) > 1 and layer.groups == layer.input_shape[1]


@dataclass(frozen=True)
class DenseReference:
    """The run's dense conv with the highest achieved GFLOP/s, against which grouped convs are compared."""

    kind: str = field(default="dense conv", init=False)
    name: str
    gflops: float
    intensity: float  # FLOP/byte


@dataclass(frozen=True)
class ThresholdReference:
    """The intensity under which a grouped conv is memory-bound when the run has no dense conv."""

    kind: str = field(default="threshold", init=False)
    max_intensity: float  # FLOP/byte


@dataclass(frozen=True)
class MemoryBoundLayer:
    """A memory-bound grouped conv layer."""

    name: str
    groups: int
    depthwise: bool
    input_shape: list[int]
    kernel: list[int]
    intensity: float  # FLOP/byte
    gflops: float
    throughput_ratio: float | None  # of the dense reference's GFLOP/s
    intensity_ratio: float | None  # of the dense reference's intensity
    share: float  # of step time
    time_ms_per_step: float
    memory_format: str


@dataclass(frozen=True)
class InefficientDepthwiseEvidence:
    """Memory-bound grouped convs against the run's best dense conv, or the intensity threshold without one."""

    share: float  # of step time, all layers
    reference: DenseReference | ThresholdReference
    nchw_layers: int
    layers: list[MemoryBoundLayer]  # the first named in the message
    no_candidate: str | None  # why there is no candidate

    def message(self) -> str:
        top, ref = self.layers[0], self.reference
        kind = "depthwise" if top.depthwise else f"{top.groups}-group"
        kernel = "×".join(str(k) for k in top.kernel) or "?"
        if isinstance(ref, DenseReference):
            against = (f"{top.throughput_ratio:.2f}× the {ref.gflops:.1f} GFLOP/s of dense {ref.name} "
                       f"({ref.intensity:.1f} FLOP/byte)")
        else:
            against = f"under the {ref.max_intensity:g} FLOP/byte threshold; the model has no dense conv to compare"
        where = FORMAT_WORDS.get(MemoryFormat(top.memory_format), f"memory format {top.memory_format}")
        message = (f"{top.name}: {kind} {kernel} conv at {top.intensity:.2f} FLOP/byte reaches "
                   f"{top.gflops:.1f} GFLOP/s, {against}; {top.share:.0%} of the step, {where}")
        if len(self.layers) > 1:
            return (f"{len(self.layers)} memory-bound grouped conv layers take {self.share:.0%} of the step; "
                    f"slowest {message}")
        return message


class InefficientDepthwiseRule:
    """Depthwise and grouped convs with low arithmetic intensity that reach a fraction of the dense convs' GFLOP/s."""

    id = "CD114"
    name = "inefficient-depthwise"
    summary = "Depthwise or grouped convolutions are memory-bound and run far below the dense convolutions' GFLOP/s"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    min_share = 0.05  # Options: smallest share of the step time of a layer for it to be reported
    max_throughput_ratio = 0.5  # Options: largest achieved GFLOP/s of a layer over the best dense conv's
    max_intensity_ratio = 0.5  # Options: largest intensity (FLOP/byte) of a layer over the best dense conv's
    max_intensity = 10.0  # Options: FLOP/byte; below it a layer is memory-bound when the run has no dense conv
    doc = """\
## What it detects
Convolutions with more than one group (depthwise when groups equals the input channels, grouped otherwise)
that take at least `min_share` of the step and are memory-bound. Against the run's best dense conv (one
group, highest achieved GFLOP/s), a layer is reported when its arithmetic intensity is at most
`max_intensity_ratio` of that conv's and its achieved GFLOP/s at most `max_throughput_ratio` of it. When the
model has no dense conv, a layer is reported when its intensity is under `max_intensity` FLOP/byte.

## Why it is slow
A depthwise k×k conv does k² multiply-adds per value it reads (a 3×3 one about 2.25 FLOP per byte in fp32),
where a dense conv reuses each value across all its output channels (tens to hundreds of FLOP per byte). It is
bound by memory bandwidth, not by arithmetic, so it reaches a small fraction of the GFLOP/s the dense convs
of the same model reach, and in NCHW many libraries fall back to slow generic kernels for it. A depthwise
layer with a ninth of a dense conv's FLOPs can take a third of its time or more: FLOP cuts do not show up as
time.

## Example
```python
block = nn.Sequential(
    nn.Conv2d(64, 64, 3, padding=1, groups=64),  # depthwise
    nn.Conv2d(64, 128, 1),                       # pointwise
)
out = block(torch.randn(1, 64, 224, 224))        # NCHW
```

## Use instead
```python
block = block.to(memory_format=torch.channels_last)      # oneDNN/cuDNN NHWC depthwise kernels
block = torch.compile(block)                             # fuse BN/activation around the depthwise conv
out = block(x.contiguous(memory_format=torch.channels_last))
```
Do not expect a further FLOP cut (fewer channels, smaller kernels) in these layers to save time in
proportion: they wait on memory. convdoctor measures the channels_last candidate on your workload.

## Evidence
Each conv layer's groups, input shape and input strides (memory format), its FLOPs and bytes per call
computed from the shapes (intensity = FLOPs / bytes of input, weight, bias and output), its time per step
and share of the step, and its achieved GFLOP/s = forward FLOPs × calls per step / time per step. The
reference is the dense conv of the same run with the highest achieved GFLOP/s, or the `max_intensity`
threshold when there is none. In a training step the time includes the backward pass, so the GFLOP/s
compare layers of one run and are not a fraction of the device's peak.

## Options
`min_share` (fraction of step time per layer, default 0.05): a layer under it is not reported.
`max_throughput_ratio` (ratio of GFLOP/s, default 0.5): largest achieved GFLOP/s of a layer over the best
dense conv's for it to be reported.
`max_intensity_ratio` (ratio of FLOP/byte, default 0.5): largest intensity of a layer over the best dense
conv's for it to count as memory-bound.
`max_intensity` (FLOP/byte, default 10): with no dense conv in the run, the intensity under which a layer
counts as memory-bound (below the ridge point of current CPUs and GPUs in fp32).

## References
- https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html
- https://arxiv.org/abs/1704.04861 (Howard et al., MobileNets: depthwise separable convolutions)
- https://docs.nvidia.com/deeplearning/performance/dl-performance-convolutional/index.html
- https://en.wikipedia.org/wiki/Roofline_model
"""

    def reference(self, analysis: ConvAnalysis) -> ConvLayer | None:
        """The dense conv (one group) with the highest achieved GFLOP/s, or None when the run has none."""
        dense = [layer for layer in analysis.layers if layer.groups == 1 and not layer.transposed
                 and achieved_gflops(layer) is not None and layer.intensity is not None]
        return max(dense, key=lambda layer: achieved_gflops(layer) or 0.0, default=None)

    def flagged(self, analysis: ConvAnalysis, layer: ConvLayer, reference: ConvLayer | None) -> bool:
        """Whether a grouped layer is heavy, memory-bound and (against a dense reference) far below its GFLOP/s."""
        gflops, intensity = achieved_gflops(layer), layer.intensity
        if not is_grouped(layer) or gflops is None or intensity is None:
            return False
        if analysis.share(layer.time_per_step_us) < self.min_share:
            return False
        if reference is None:
            return intensity <= self.max_intensity
        ref_gflops, ref_intensity = achieved_gflops(reference), reference.intensity
        assert ref_gflops is not None and ref_intensity is not None  # reference() keeps only such layers
        memory_bound = intensity <= self.max_intensity_ratio * ref_intensity
        return memory_bound and gflops <= self.max_throughput_ratio * ref_gflops

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        reference = self.reference(analysis)
        chosen = [layer for layer in analysis.layers if self.flagged(analysis, layer, reference)]
        if not chosen:
            return
        rows = [self._row(analysis, layer, reference) for layer in chosen]
        share = sum(row.share for row in rows)
        nchw = [layer for layer in chosen if layer.memory_format is MemoryFormat.CONTIGUOUS]
        ref: DenseReference | ThresholdReference = ThresholdReference(self.max_intensity)
        if reference is not None:
            ref_gflops, ref_intensity = achieved_gflops(reference), reference.intensity
            assert ref_gflops is not None and ref_intensity is not None  # reference() keeps only such layers
            ref = DenseReference(reference.name, ref_gflops, ref_intensity)
        advice = ("These layers are memory-bound: they wait on memory, not on arithmetic. Keep them in channels_last "
                  "(oneDNN and cuDNN have NHWC depthwise kernels that are much faster than the NCHW fallbacks), fuse "
                  "each depthwise conv with what follows it (torch.compile folds the BN/activation after it into "
                  "the same memory pass; a fused depthwise + pointwise kernel saves writing and re-reading the "
                  "activation), and do not expect cutting their FLOPs to show up as time.")
        candidate, no_candidate = None, None
        if nchw:  # CD101's candidate: the NHWC kernels' speed is not in the trace, so it is measured
            candidate = Candidate(
                title="model and inputs in channels_last",
                transform=to_channels_last,
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,
            )
        else:
            in_nhwc = all(layer.memory_format is MemoryFormat.CHANNELS_LAST for layer in chosen)
            no_candidate = NO_CANDIDATE_CHANNELS_LAST if in_nhwc else NO_CANDIDATE_OTHER
            advice += f" {no_candidate}."
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if nchw else Severity.INFO,
            fix=("Convert the model and its inputs to channels_last for NHWC depthwise kernels" if candidate else
                 "Fuse depthwise convolutions with what follows them"),
            advice=advice,
            snippet=SNIPPET,
            layers=[layer.name for layer in chosen],
            evidence=InefficientDepthwiseEvidence(share=share, reference=ref, nchw_layers=len(nchw), layers=rows,
                                                  no_candidate=no_candidate),
            estimated_saving=None,  # the NHWC kernels' speed is not in the trace: the candidate measures it
            candidate=candidate,
        )

    def _row(self, analysis: ConvAnalysis, layer: ConvLayer, reference: ConvLayer | None) -> MemoryBoundLayer:
        gflops = achieved_gflops(layer)
        ref_gflops = achieved_gflops(reference) if reference is not None else None
        assert gflops is not None and layer.intensity is not None  # flagged() checked both
        return MemoryBoundLayer(
            name=layer.name,
            groups=layer.groups,
            depthwise=is_depthwise(layer),
            input_shape=list(layer.input_shape),
            kernel=list(layer.weight_shape[2:]),
            intensity=layer.intensity,
            gflops=gflops,
            throughput_ratio=gflops / ref_gflops if ref_gflops else None,
            intensity_ratio=layer.intensity / reference.intensity if reference and reference.intensity else None,
            share=analysis.share(layer.time_per_step_us),
            time_ms_per_step=layer.time_per_step_us / 1e3,
            memory_format=layer.memory_format.value,
        )
