"""CD105 channel-alignment: conv channel counts that are not a multiple of the vector/tensor-core block."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, LayerTrial, NumericsContract
from convdoctor.analyzer.candidates.conv_replacement import replace_convs
from convdoctor.analyzer.conv.conv_device import conv_device, device_properties
from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer, TimeBasis
from convdoctor.analyzer.trace.module_scope import ROOT_NAME
from convdoctor.rules.base import Finding, Requirement, Severity
from convdoctor.rules.shared.conv_choice import is_dense_conv2d, not_replaceable

if TYPE_CHECKING:
    from torch import nn

    from convdoctor.analyzer.capture.workload import Workload

CPU_BLOCKS = {"AVX512": 16, "AVX2": 8}  # fp32 lanes of oneDNN's blocked layouts (nChw16c / nChw8c)
IMAGE_CHANNELS = 4  # input channels up to this (RGB, RGBA) are exempt: cuDNN pads them itself, oneDNN has a path
IMAGE_INPUT_EXEMPT = f"input channels ≤ {IMAGE_CHANNELS} are not counted (the first conv's image)"


@dataclass(frozen=True)
class MisalignedLayer:
    """A conv layer whose channel counts are not multiples of the block, and what padding makes them."""

    name: str
    in_channels: int
    out_channels: int
    in_channels_padded: int  # image inputs (up to IMAGE_CHANNELS) are kept
    out_channels_padded: int
    input_shape: list[int]
    share: float
    time_ms_per_step: float


@dataclass(frozen=True)
class ChannelAlignmentEvidence:
    """The conv layers of one dtype whose channel counts miss the block, and the block."""

    multiple: int
    dtype: str
    why: str  # why this block, on this device
    image_input_exempt: str
    share: float
    layers: list[MisalignedLayer]
    not_replaceable: dict[str, str | None]  # layer: why the candidate leaves it alone

    def message(self) -> str:
        top, rest = self.layers[0], len(self.layers) - 1
        more = f" and {rest} more layer{'s' if rest > 1 else ''}" if rest else ""
        return (f"{top.name}: {top.in_channels}→{top.out_channels} channels, not multiples of {self.multiple} "
                f"({self.dtype}){more}; {self.share:.0%} of the step in such layers")


def padded(multiple: int) -> Callable[[nn.Conv2d], nn.Module]:
    """Build a PaddedConv2d of ``old`` with both channel counts rounded up to ``multiple`` (image inputs kept)."""

    def build(old: nn.Conv2d) -> nn.Module:
        from convdoctor.analyzer.candidates.torch_parts import PaddedConv2d

        in_to = old.in_channels if old.in_channels <= IMAGE_CHANNELS else _round_up(old.in_channels, multiple)
        return PaddedConv2d(old, in_to, _round_up(old.out_channels, multiple))

    return build


def __getattr__(name: str) -> Any:
    """``PaddedConv2d``, where the report's advice names it, imported on first use (it needs torch)."""
    if name == "PaddedConv2d":
        from convdoctor.analyzer.candidates.torch_parts import PaddedConv2d

        return PaddedConv2d
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pad_channels(names: list[str], multiple: int) -> Callable[[Workload], Workload]:
    """A transform that computes the named nn.Conv2d layers with channels padded to ``multiple``."""

    def transform(workload: Workload) -> Workload:
        return replace_convs(workload, names, padded(multiple))

    return transform


def channel_block(analysis: ConvAnalysis, dtype: str) -> tuple[int | None, str]:
    """The channel multiple the device's fast path wants for ``dtype``, and the reason (also when there is none)."""
    profile = analysis.profile
    env = profile.environment
    if analysis.time_basis is TimeBasis.DEVICE:
        props = device_properties(profile, conv_device(profile))
        major = props.get("computeMajor") if props else None
        if not isinstance(major, int):
            return None, "the trace does not say which GPU ran the convs"
        name = f"{props.get('name', 'the GPU')} (sm_{major}{props.get('computeMinor', 0)})"
        if dtype == "float16" and major >= 7 or dtype == "bfloat16" and major >= 8:
            return 8, f"{name} runs {dtype} convs on tensor cores, in blocks of 8 channels"
        if dtype == "float32" and major >= 8:
            if env.cudnn_allow_tf32 is False:
                return None, f"{name}: TF32 was turned off, so fp32 convs do not use tensor cores"
            return 4, f"{name} runs fp32 convs as TF32 on tensor cores, in blocks of 4 channels"
        return None, f"{name} has no tensor-core path for {dtype} convs"
    if dtype != "float32":
        return None, f"no oneDNN channel block known here for {dtype}"
    capability = env.cpu_capability
    if capability is None:
        return None, "the trace does not record the CPU's vector ISA (captured outside convdoctor)"
    block = CPU_BLOCKS.get(capability)
    if block is None:
        return None, f"this CPU's ISA ({capability}) has no oneDNN fp32 channel block"
    return block, f"oneDNN on {capability} computes fp32 convs in blocks of {block} channels (nChw{block}c)"


def misaligned(layer: ConvLayer, multiple: int) -> bool:
    """Output channels, or input channels beyond an image's, that are not a multiple of ``multiple``."""
    in_channels, out_channels = layer.input_shape[1], layer.weight_shape[0]
    return out_channels % multiple != 0 or (in_channels > IMAGE_CHANNELS and in_channels % multiple != 0)


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


class ChannelAlignmentRule:
    """Conv layers whose channel counts are not a multiple of the block the device computes in."""

    id = "CD105"
    name = "channel-alignment"
    summary = "Conv channels not a multiple of the tensor-core / oneDNN block: padded tails waste work"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS})
    min_share = 0.02  # Options: smallest share of step time of a layer for it to be reported
    max_layer_trials = 3  # Options: slowest misaligned layers also measured alone
    doc = """\
## What it detects
Dense 2-D conv layers (one group) whose output channels, or input channels, are not a multiple of the block
the device computes convolutions in, and that take at least `min_share` of the step: on an NVIDIA GPU with
tensor cores, 8 for float16 (sm_70+) and bfloat16 (sm_80+), 4 for float32 run as TF32 (sm_80+, unless TF32
was turned off); on a CPU, oneDNN's blocked fp32 layouts use 16 channels with AVX-512 and 8 with AVX2. fp32
on a Volta or Turing GPU (no fp32 tensor cores) and CPUs without those ISAs are not reported. Input channels of
4 or fewer (the image input of the first conv) are exempt: cuDNN pads them itself and oneDNN has a dedicated
path for them.

## Why it is slow
Tensor cores multiply tiles of 8 (fp16/bf16) or 4 (TF32) channels; oneDNN lays activations out as blocks of
8 or 16 channels (nChw8c/nChw16c) to fill a vector register. A channel count that is not a multiple is padded
inside the library (extra copies, partly empty tiles) or sent to a slower kernel without tensor cores. 30
channels cost about as much as 32, and sometimes more. Whether this matters on a given device and shape is
an empirical question, which is why convdoctor measures the padded layer.

## Example
```python
nn.Conv2d(64, 30, kernel_size=3, padding=1)   # 30 output channels
nn.Conv2d(30, 64, kernel_size=3, padding=1)
```

## Use instead
```python
nn.Conv2d(64, 32, kernel_size=3, padding=1)   # widths a multiple of 8 (16 for fp32 on AVX-512): retrain
nn.Conv2d(32, 64, kernel_size=3, padding=1)
```
Without retraining, pad the existing layer: zero filters and zero input channels up to the multiple, slicing
the extra outputs off (convdoctor's candidate does exactly this; the outputs are unchanged). Padding costs a
copy of the input when input channels are padded; widening the layers in the architecture does not.

## Evidence
Each conv layer's input and weight shapes, groups and dtype (`Input Dims`, `Input type` of the conv
operator) and its time per step with its share; on a GPU the device the conv kernels ran on and its
`computeMajor`/`computeMinor` (`deviceProperties`) and the TF32 setting convdoctor recorded; on a CPU the
vector ISA convdoctor recorded at capture (`torch.backends.cpu.get_cpu_capability()`, key `cpu_capability`).
The candidate is measured twice: the whole model, and each of the `max_layer_trials` slowest layers alone on
random inputs of its recorded input shape, before and after padding, in interleaved rounds.

## Options
`min_share` (fraction of step time per layer, default 0.02): a layer under it is not reported.
`max_layer_trials` (layers, default 3): the slowest misaligned layers also measured on their own.

## References
- https://docs.nvidia.com/deeplearning/performance/dl-performance-convolutional/index.html#channels
- https://docs.nvidia.com/deeplearning/performance/dl-performance-matrix-multiplication/index.html#requirements-tc
- https://oneapi-src.github.io/oneDNN/dev_guide_understanding_memory_formats.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        by_dtype: dict[str, list[ConvLayer]] = {}
        for layer in analysis.layers:
            if is_dense_conv2d(layer) and analysis.share(layer.time_per_step_us) >= self.min_share:
                by_dtype.setdefault(layer.dtype, []).append(layer)
        for dtype, layers in by_dtype.items():
            multiple, reason = channel_block(analysis, dtype)
            if multiple is None:
                continue
            found = [layer for layer in layers if misaligned(layer, multiple)]
            chosen = [layer for layer in found if not_replaceable(layer) is None]
            if found:
                yield self._finding(analysis, found, chosen, multiple, reason, dtype)

    def _finding(self, analysis: ConvAnalysis, found: list[ConvLayer], chosen: list[ConvLayer], multiple: int,
                 reason: str, dtype: str) -> Finding:
        rows = [_row(analysis, layer, multiple) for layer in found]
        names = [layer.name for layer in chosen]
        trials = tuple(LayerTrial(layer.name, tuple(layer.input_shape), pad_channels([ROOT_NAME], multiple))
                       for layer in chosen[:self.max_layer_trials])
        return Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix=f"Pad conv channels to multiples of {multiple}",
            advice=(f"{reason}. Widen these layers to multiples of {multiple} when you next retrain, or pad them "
                    "with zero channels now (same outputs). The measurement says whether it pays on this device: "
                    "padding does more arithmetic to use a faster path, and only a measurement tells which wins."),
            snippet=_snippet(rows[0], multiple),
            layers=[layer.name for layer in found],
            evidence=ChannelAlignmentEvidence(
                multiple=multiple,
                dtype=dtype,
                why=reason,
                image_input_exempt=IMAGE_INPUT_EXEMPT,
                share=sum(row.share for row in rows),
                layers=rows,
                not_replaceable={layer.name: not_replaceable(layer) for layer in found if layer not in chosen},
            ),
            estimated_saving=None,  # the trace cannot tell the padded path's speed: only the measurement can
            candidate=None if not names else Candidate(
                title=f"channels zero-padded to multiples of {multiple} in {len(names)} layer(s)",
                transform=pad_channels(names, multiple),
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,
                layer_trials=trials,
            ),
        )


def _row(analysis: ConvAnalysis, layer: ConvLayer, multiple: int) -> MisalignedLayer:
    in_channels, out_channels = layer.input_shape[1], layer.weight_shape[0]
    return MisalignedLayer(
        name=layer.name,
        in_channels=in_channels,
        out_channels=out_channels,
        in_channels_padded=in_channels if in_channels <= IMAGE_CHANNELS else _round_up(in_channels, multiple),
        out_channels_padded=_round_up(out_channels, multiple),
        input_shape=list(layer.input_shape),
        share=analysis.share(layer.time_per_step_us),
        time_ms_per_step=layer.time_per_step_us / 1e3,
    )


def _snippet(row: MisalignedLayer, multiple: int) -> str:
    return (f"# {row.name}: {row.in_channels}→{row.out_channels} channels\n"
            f"nn.Conv2d({row.in_channels_padded}, {row.out_channels_padded}, ...)  "
            f"# multiples of {multiple}; widen the neighbours to match and retrain\n"
            "# or, same outputs without retraining: zero filters/channels up to the multiple, slice the extra "
            "outputs off\n"
            "# (convdoctor.rules.cd105_channel_alignment.PaddedConv2d does this)")
