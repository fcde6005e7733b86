"""CD101 channels-last: convolutions that run in NCHW, or layout conversions around convolutions."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Iterable

from convdoctor.analyzer.layers import ConvAnalysis, MemoryFormat
from convdoctor.rules.base import Candidate, Finding, NumericsContract, Requirement, SavingBound, Severity

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    import torch

    from convdoctor.analyzer.workload import Workload

SNIPPET = """\
model = model.to(memory_format=torch.channels_last)
x = x.contiguous(memory_format=torch.channels_last)  # 5-D inputs: torch.channels_last_3d
out = model(x)"""


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor in channels_last, a 5-D one in channels_last_3d; other tensors unchanged."""
    import torch

    if tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    if tensor.dim() == 5:
        return tensor.contiguous(memory_format=torch.channels_last_3d)
    return tensor


def to_channels_last(workload: Workload) -> Workload:
    """The workload with every 4-D/5-D parameter, buffer and input in channels-last memory format."""
    import torch

    from convdoctor.analyzer.workload import map_tensors

    model = workload.model
    with torch.no_grad():
        for param in model.parameters():
            param.data = channels_last(param.data)
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = channels_last(buffer)
    return replace(workload, model=model, inputs=map_tensors(workload.inputs, channels_last))


class ChannelsLastRule:
    """Convolutions in NCHW where channels-last (NHWC) kernels would run, or layout conversions around them."""

    id = "CD101"
    name = "channels-last"
    summary = "Convolutions run in NCHW, or memory-format conversions surround them"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    min_share = 0.0  # Options: smallest share of step time in affected layers that is reported
    doc = """\
## What it detects
2-D and 3-D convolutions whose input is in the default contiguous (NCHW) memory format, and layout
conversions charged to convolutions: `aten::copy_` between NCHW and NHWC, oneDNN reorders
(`aten::to_mkldnn`, `aten::to_dense`), cuDNN `nchwToNhwc`/`nhwcToNchw` transpose kernels.

## Why it is slow
Tensor-core cuDNN kernels and oneDNN's fastest CPU kernels work on NHWC. Given NCHW, the library either
picks a slower kernel or transposes activations before and after each convolution, which costs memory
bandwidth on every call.

## Example
```python
model = torchvision.models.resnet50()
out = model(torch.randn(32, 3, 224, 224))
```

## Use instead
```python
model = model.to(memory_format=torch.channels_last)
out = model(x.contiguous(memory_format=torch.channels_last))
```
The gain depends on the device and the layer shapes: on CPUs it ranges from a loss to about 2x, which is
why convdoctor measures it on your workload before recommending it.

## Evidence
Each conv layer's input strides (`Input Strides` of `aten::convolution`), and the conversion ops and kernels
charged to each layer with their time.

## Options
`min_share` (fraction of step time, default 0.0): smallest share of the step spent in affected layers
for the finding to be reported.

## References
- https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html
- https://docs.nvidia.com/deeplearning/performance/dl-performance-convolutional/index.html#tensor-layout
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        spatial = [layer for layer in analysis.layers if len(layer.input_shape) in (4, 5)]
        nchw = [layer for layer in spatial if layer.memory_format is MemoryFormat.CONTIGUOUS]
        converting = [layer for layer in spatial if layer.conversions]
        unique = {id(layer): layer for layer in (*nchw, *converting)}.values()
        affected = sorted(unique, key=lambda layer: layer.time_per_step_us, reverse=True)
        if not affected:
            return
        affected_us = sum(layer.time_per_step_us for layer in affected)
        share = analysis.share(affected_us)
        if share < self.min_share:
            return
        conversion_us = analysis.conversion_time_us
        parts = [f"{len(nchw)} of {len(spatial)} conv layers run in NCHW"] if nchw else []
        if converting:
            count = sum(len(layer.conversions) for layer in converting) / analysis.profile.step_count
            parts.append(f"{count:g} layout conversions per step cost {conversion_us / 1e3:.2f} ms")
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= 0.2 else Severity.INFO,
            message=f"{'; '.join(parts)} ({share:.0%} of the step in these layers)",
            fix="Convert the model and its inputs to channels_last",
            advice="Keep activations in NHWC end to end: convert the model's parameters and the inputs once, "
                   "outside the step, so that no layer has to transpose.",
            snippet=SNIPPET,
            layers=[layer.name for layer in affected],
            evidence={
                "nchw_layers": len(nchw),
                "spatial_conv_layers": len(spatial),
                "affected_share": share,
                "conversion_ms_per_step": conversion_us / 1e3,
                "conversions": sorted({c.name for layer in converting for c in layer.conversions}),
            },
            estimated_saving=analysis.share(conversion_us) if conversion_us > 0 else None,
            saving_bound=SavingBound.PART,  # the visible conversions; NHWC kernels' own speed is not in the trace
            candidate=Candidate(
                title="model and inputs in channels_last",
                transform=to_channels_last,
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,
            ),
        )
