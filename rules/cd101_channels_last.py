"""CD101 channels-last: convolutions that run in NCHW, or layout conversions around convolutions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
from convdoctor.analyzer.candidates.layout import to_channels_last
from convdoctor.analyzer.conv.layers import ConvAnalysis, LayoutConversion, MemoryFormat
from convdoctor.analyzer.conv.module_time import leaf_module_times
from convdoctor.analyzer.trace.probe_record import recorded_probe
from convdoctor.rules.base import Finding, Probe, Requirement, SavingBound, Severity

SNIPPET = """\
model = model.to(memory_format=torch.channels_last)
x = x.contiguous(memory_format=torch.channels_last)  # 5-D inputs: torch.channels_last_3d
out = model(x)"""


@dataclass(frozen=True)
class ModuleClassSaving:
    """One module class's time per step in the trace and what channels_last is predicted to save of it."""

    trace_ms_per_step: float
    predicted_saving_ms_per_step: float


@dataclass(frozen=True)
class LayoutProbeEvidence:
    """The layout probe's prediction (ProbedSaving), module classes largest saving first."""

    predicted_saving_ms_per_step: float
    predicted_share: float  # of the step timed without the profiler, where the trace has it
    probed_modules: int
    conversions_outside_probed_ms_per_step: float
    by_module_class: dict[str, ModuleClassSaving]


@dataclass(frozen=True)
class ChannelsLastEvidence:
    """Conv layers in NCHW and the layout conversions charged to conv layers; the probe's prediction if taken."""

    nchw_layers: int
    spatial_conv_layers: int
    affected_share: float  # of the step, in the NCHW or converting layers
    conversion_ms_per_step: float
    conversions: list[str]  # the conversion ops' names
    conversions_per_step: float = field(repr=False, metadata={"serialize": False})
    layout_probe: LayoutProbeEvidence | None = field(default=None, metadata={"omit_none": True})

    def message(self) -> str:
        parts: list[str] = []
        if self.nchw_layers:
            parts.append(f"{self.nchw_layers} of {self.spatial_conv_layers} conv layers run in NCHW")
        if self.conversions:
            parts.append(f"{self.conversions_per_step:g} layout conversions per step cost "
                         f"{self.conversion_ms_per_step:.2f} ms")
        if self.layout_probe is not None:
            word = "saves" if self.layout_probe.predicted_saving_ms_per_step >= 0 else "costs"
            parts.append(f"timed alone in channels_last, these modules predict it {word} "
                         f"{abs(self.layout_probe.predicted_share):.0%} of the step")
        return f"{'; '.join(parts)} ({self.affected_share:.0%} of the step in these layers)"


@dataclass(frozen=True)
class ProbedSaving:
    """What channels_last saves per step by the layout probe: each probed leaf module's time in the trace times
    ``1 - channels_last / current`` as timed alone, plus the forward's layout conversions outside those modules."""

    saving_us: float
    by_class: dict[str, tuple[float, float]]  # module class: (time per step in the trace, predicted saving), in us
    probed_modules: int
    conversions_outside_us: float

    def evidence(self, analysis: ConvAnalysis) -> LayoutProbeEvidence:
        largest_first = sorted(self.by_class.items(), key=lambda item: -abs(item[1][1]))
        return LayoutProbeEvidence(
            predicted_saving_ms_per_step=self.saving_us / 1e3,
            predicted_share=analysis.saving_share(self.saving_us),
            probed_modules=self.probed_modules,
            conversions_outside_probed_ms_per_step=self.conversions_outside_us / 1e3,
            by_module_class={name: ModuleClassSaving(trace / 1e3, saving / 1e3)
                             for name, (trace, saving) in largest_first},
        )


def probed_saving(analysis: ConvAnalysis, conversions: list[LayoutConversion]) -> ProbedSaving | None:
    """The layout probe's prediction for the trace, or None when the trace holds no probe (traces captured
    elsewhere, or by ``profile --no-measure``) or none of its modules is in the trace."""
    probe = recorded_probe(analysis.profile)
    if not probe:
        return None
    times = leaf_module_times(analysis.profile, analysis.time_basis)
    by_class: dict[str, tuple[float, float]] = {}
    for name, layout in probe.items():
        if name in times:
            trace_us, saving_us = by_class.get(times[name].class_name, (0.0, 0.0))
            by_class[times[name].class_name] = (trace_us + times[name].time_us,
                                                saving_us + times[name].time_us * (1 - layout.ratio))
    if not by_class:
        return None
    # Conversions in the forward outside any probed module; those of the backward (no module scope) run inside the
    # autograd nodes already counted in the modules' backward time.
    outside = sum(c.dur_us for c in conversions
                  if c.op_module is not None and c.op_module not in probe) / analysis.profile.step_count
    return ProbedSaving(saving_us=sum(saving for _, saving in by_class.values()) + outside, by_class=by_class,
                        probed_modules=sum(name in times for name in probe), conversions_outside_us=outside)


class ChannelsLastRule:
    """Convolutions in NCHW where channels-last (NHWC) kernels would run, or layout conversions around them."""

    id = "CD101"
    name = "channels-last"
    summary = "Convolutions run in NCHW, or memory-format conversions surround them"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    probes = frozenset({Probe.LAYOUT})
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
charged to each layer with their time. When `profile` took the layout probe (it does when it measures), each leaf
module's time alone in channels_last against its own layout, recorded in the trace: the predicted saving is each
module's time in the trace (forward, and its backward nodes in training) × `1 - channels_last/current`, plus the
conversions outside those modules, over the step timed without the profiler at capture (much of the profiler's
cost lies around the operators, but multi-threaded convs slow under it too, so this can run high). Without a probe
only the visible conversions are predicted.

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
        probed = probed_saving(analysis, [c for layer in converting for c in layer.conversions])
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= 0.2 else Severity.INFO,
            fix="Convert the model and its inputs to channels_last",
            advice="Keep activations in NHWC end to end: convert the model's parameters and the inputs once, "
                   "outside the step, so that no layer has to transpose.",
            snippet=SNIPPET,
            layers=[layer.name for layer in affected],
            evidence=ChannelsLastEvidence(
                nchw_layers=len(nchw),
                spatial_conv_layers=len(spatial),
                affected_share=share,
                conversion_ms_per_step=conversion_us / 1e3,
                conversions=sorted({c.name for layer in converting for c in layer.conversions}),
                conversions_per_step=sum(len(layer.conversions) for layer in converting) / analysis.profile.step_count,
                layout_probe=probed.evidence(analysis) if probed is not None else None,
            ),
            # With a layout probe (convdoctor's own captures) the whole effect is predicted; else only the visible
            # conversions are, since the NHWC kernels' own speed is not in the trace.
            estimated_saving=(analysis.saving_share(probed.saving_us) if probed is not None
                              else analysis.saving_share(conversion_us) if conversion_us > 0 else None),
            saving_bound=SavingBound.ESTIMATE if probed is not None else SavingBound.PART,
            candidate=Candidate(
                title="model and inputs in channels_last",
                transform=to_channels_last,
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,
            ),
        )
