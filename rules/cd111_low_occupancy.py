"""CD111 low-occupancy: conv kernels that launch fewer blocks than the GPU has SMs, or run at very low occupancy."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer
from convdoctor.analyzer.trace.profile import EventKind, Kernel, Profile
from convdoctor.rules.base import Finding, Requirement, Severity

SNIPPET = """\
torch.backends.cudnn.benchmark = True          # let cuDNN time its algorithms for these shapes (fixed shapes)
model = model.to(memory_format=torch.channels_last)
with torch.autocast(device_type="cuda", dtype=torch.float16):
    out = model(x.contiguous(memory_format=torch.channels_last))   # and, where memory allows, a larger batch"""


@dataclass
class _Launch:
    """The kernels of one layer with the same name and launch configuration, summed over calls."""

    name: str
    grid: tuple[int, int, int] | None
    block: tuple[int, int, int] | None
    occupancy_pct: float
    blocks_per_sm: float
    dur_us: float = 0.0
    count: int = 0


@dataclass(frozen=True)
class KernelLaunch:
    """A significant launch configuration of a layer's kernel, summed over its calls."""

    name: str
    ms_per_step: float
    occupancy_pct: float  # estimated
    blocks_per_sm: float
    grid: list[int] | None
    block: list[int] | None


@dataclass(frozen=True)
class OccupancyLayer:
    """A flagged conv layer: its kernels' occupancy and blocks per SM, weighted by time."""

    layer: str
    layer_ms_per_step: float
    occupancy_pct: float  # estimated, time-weighted over its kernels
    underfilled_share: float  # of its kernel time, in launches with fewer blocks than SMs
    min_blocks_per_sm: float  # over its significant launches
    kernel_ms_per_step: float
    kernels: list[KernelLaunch]  # its significant launches, longest first


@dataclass(frozen=True)
class LowOccupancyEvidence:
    """Conv layers whose kernels leave SMs without blocks or run at low occupancy, with their launches."""

    device: int | None
    num_sms: int | None
    layers: list[OccupancyLayer]  # in model order
    flagged_share: float  # of step time
    checked_layers: int
    layers_without_occupancy: list[str]
    note: str
    cudnn_benchmark: bool | None
    # the options that flag a layer
    max_occupancy_pct: float = field(metadata={"serialize": False})
    min_underfilled_share: float = field(metadata={"serialize": False})

    def message(self) -> str:
        underfilled = [row for row in self.layers if row.underfilled_share >= self.min_underfilled_share]
        low = [row for row in self.layers if row.occupancy_pct < self.max_occupancy_pct]
        parts = []
        if underfilled:
            worst = min(row.min_blocks_per_sm for row in underfilled)
            mean_share = sum(row.underfilled_share for row in underfilled) / len(underfilled)
            sms = f"the {self.num_sms} SMs" if self.num_sms else "the GPU's SMs"
            parts.append(f"{len(underfilled)} conv layer(s) spend {mean_share:.0%} of their kernel time in launches "
                         f"with fewer blocks than {sms} (down to {worst:.2g} blocks/SM)")
        if low:
            parts.append(f"{len(low)} conv layer(s) run at {min(row.occupancy_pct for row in low):.0f}-"
                         f"{max(row.occupancy_pct for row in low):.0f}% estimated occupancy")
        names = [row.layer for row in self.layers]
        return (f"{'; '.join(parts)}: {', '.join(names[:4])}{'…' if len(names) > 4 else ''} "
                f"({self.flagged_share:.1%} of the step)")


class LowOccupancyRule:
    """Conv layers whose kernels, weighted by time, leave SMs without work or run at very low occupancy."""

    id = "CD111"
    name = "low-occupancy"
    summary = "Conv kernels launch fewer blocks than SMs, or run at very low occupancy"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.DEVICE_KERNELS})
    # Options (see the doc):
    max_occupancy_pct = 10.0  # %
    min_underfilled_share = 0.25  # fraction of a layer's kernel time
    min_share = 0.01  # fraction of step time
    significant_kernel_share = 0.05  # fraction of a layer's kernel time
    doc = """\
## What it detects
Conv layers (forward and backward kernels together) that spend at least `min_underfilled_share` of their
kernel time in launches with fewer thread blocks than the GPU has SMs (`blocks per SM` < 1), or whose
time-weighted estimated occupancy is below `max_occupancy_pct`. Typical of small batches, small spatial sizes
late in a network, and of weight-gradient GEMMs whose output (the weights) is small.

## Why it is slow
A launch with fewer blocks than SMs leaves the other SMs idle for the whole kernel: 72 blocks on an 80-SM V100
use at most 90% of the GPU, 16 blocks use 20%. Very low occupancy (few warps per SM) leaves each SM unable to
hide memory and instruction latency. cuDNN's GEMM kernels run at 12-50% theoretical occupancy by design
(many registers per thread), so only occupancy well below that is reported.

## Example
```python
model = torchvision.models.resnet50().cuda()
out = model(torch.randn(2, 3, 224, 224, device="cuda"))   # batch 2: the late 7x7 layers launch a few blocks
```

## Use instead
```python
torch.backends.cudnn.benchmark = True   # cuDNN times its algorithms, e.g. split-K weight gradients
model = model.to(memory_format=torch.channels_last)
with torch.autocast(device_type="cuda", dtype=torch.float16):   # tensor-core kernels, other tilings
    out = model(x.contiguous(memory_format=torch.channels_last))
```
and a larger batch where memory and the training recipe allow it (convdoctor does not change the batch: that
changes the workload).

## Evidence
Per kernel, Kineto's `grid`, `block`, `blocks per SM` (blocks in the grid / SMs) and `est. achieved occupancy
%` (the occupancy calculator's theoretical occupancy, capped by the grid size; not a measured value), with its
duration; kernels are charged to a conv layer through their launching operator (forward conv and its
backward node). Kernels whose trace lacks these fields are left out, and layers without any are listed.

## Options
- `max_occupancy_pct` (%, default 10): a layer whose time-weighted estimated occupancy is below this is
  reported.
- `min_underfilled_share` (fraction of the layer's kernel time, default 0.25): a layer spending at least this
  share in launches with fewer blocks than SMs is reported.
- `min_share` (fraction of step time, default 0.01): smallest share of the step in the reported layers for
  the finding to be made.
- `significant_kernel_share` (fraction of the layer's kernel time, default 0.05): kernels below this share
  (index and offset helpers) are left out of the layer's minimum blocks per SM and kernel list.

## References
- https://docs.nvidia.com/cuda/cuda-c-best-practices-guide/index.html#occupancy
- https://docs.nvidia.com/deeplearning/performance/dl-performance-convolutional/index.html
- https://github.com/pytorch/kineto/blob/main/libkineto/src/DeviceProperties.cpp (blocks per SM, occupancy)
- https://pytorch.org/docs/stable/backends.html#torch.backends.cudnn.benchmark
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        steps = profile.step_count
        flagged: list[OccupancyLayer] = []
        without_data: list[str] = []
        devices: dict[int | None, float] = defaultdict(float)
        for layer in analysis.layers:
            kernels = [k for k in layer.kernels if k.kind is EventKind.KERNEL]
            measured = [k for k in kernels if k.est_occupancy_pct is not None and k.blocks_per_sm is not None]
            total_us = sum(k.dur_us for k in measured)
            if not measured or total_us <= 0:
                without_data.append(layer.name)
                continue
            for k in measured:
                devices[k.device] += k.dur_us
            row = self._row(layer, measured, total_us, steps)
            if row.occupancy_pct < self.max_occupancy_pct or row.underfilled_share >= self.min_underfilled_share:
                flagged.append(row)
        if not flagged:
            return
        flagged_us = sum(row.layer_ms_per_step for row in flagged) * 1e3
        share = analysis.share(flagged_us)
        if share < self.min_share:
            return
        device = max(devices, key=lambda d: devices[d]) if devices else None
        benchmark = profile.environment.cudnn_benchmark
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=Severity.WARNING if share >= 0.1 else self.severity,
            fix="Give the GPU more parallel work per conv kernel: cudnn.benchmark, channels_last + AMP, a larger batch",
            advice=self._advice(benchmark),
            snippet=SNIPPET,
            layers=[row.layer for row in flagged],
            evidence=LowOccupancyEvidence(
                device=device,
                num_sms=_num_sms(profile, device),
                layers=flagged,
                flagged_share=share,
                checked_layers=len(analysis.layers) - len(without_data),
                layers_without_occupancy=without_data,
                note=(f"{len(without_data)} layer(s) have no kernels with occupancy fields in the trace and were "
                      "not checked") if without_data else "",
                cudnn_benchmark=benchmark,
                max_occupancy_pct=self.max_occupancy_pct,
                min_underfilled_share=self.min_underfilled_share,
            ),
            estimated_saving=None,  # what a fuller launch would gain depends on the kernel cuDNN picks instead
            candidate=None,  # a batch-size change alters the workload; cudnn.benchmark is process-wide
        )

    def _row(self, layer: ConvLayer, kernels: list[Kernel], total_us: float, steps: int) -> OccupancyLayer:
        launches: dict[tuple[Any, ...], _Launch] = {}
        for k in kernels:
            key = (k.name, k.grid, k.block)
            launch = launches.get(key) or launches.setdefault(
                key, _Launch(k.name, k.grid, k.block, float(k.est_occupancy_pct), float(k.blocks_per_sm)))
            launch.dur_us += k.dur_us
            launch.count += 1
        significant = sorted((x for x in launches.values() if x.dur_us >= self.significant_kernel_share * total_us),
                             key=lambda x: x.dur_us, reverse=True)
        significant = significant or [max(launches.values(), key=lambda x: x.dur_us)]
        return OccupancyLayer(
            layer=layer.name,
            layer_ms_per_step=layer.time_per_step_us / 1e3,
            occupancy_pct=sum(k.est_occupancy_pct * k.dur_us for k in kernels) / total_us,
            underfilled_share=sum(k.dur_us for k in kernels if k.blocks_per_sm < 1) / total_us,
            min_blocks_per_sm=min(x.blocks_per_sm for x in significant),
            kernel_ms_per_step=total_us / steps / 1e3,
            kernels=[KernelLaunch(x.name, x.dur_us / steps / 1e3, x.occupancy_pct, x.blocks_per_sm,
                                  list(x.grid) if x.grid else None, list(x.block) if x.block else None)
                     for x in significant],
        )

    def _advice(self, benchmark: Any) -> str:
        advice = ("These kernels cannot fill the GPU: each launch has too few blocks (or too few warps per SM) for "
                  "the layer's shape. Let cuDNN choose other algorithms with torch.backends.cudnn.benchmark = True "
                  "(it times split-K and other tilings that spread small outputs over more blocks); channels_last "
                  "with autocast selects different, tensor-core kernels; a larger batch gives every kernel more "
                  "blocks, where memory and the training recipe allow it.")
        if benchmark is False:
            advice += " This run had cudnn.benchmark off."
        return advice


def _num_sms(profile: Profile, device: int | None) -> int | None:
    props = next((p for p in profile.device_properties if p.get("id") == device), None)
    value = props.get("numSms") if props else None
    return value if isinstance(value, int) else None
