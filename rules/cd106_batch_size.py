"""CD106 batch-size: a small batch whose step is mostly fixed per-op cost; a larger batch spreads that cost."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.conv.layers import ConvAnalysis, TimeBasis
from convdoctor.analyzer.conv.roofline import analyze_roofline
from convdoctor.analyzer.trace.profile import EventKind
from convdoctor.rules.base import Finding, LargerBatches, Requirement, Severity

SNIPPET = """\
# convdoctor tried larger batches with the model file's get_inputs(batch_size):
def get_inputs(batch_size: int = 1):
    return torch.randn(batch_size, 3, 32, 32)

# in your loop: feed several samples per call instead of one
loader = torch.utils.data.DataLoader(dataset, batch_size=32)
# in a server: collect requests for a few ms and run them as one batch"""


@dataclass(frozen=True)
class OverheadFacts:
    """What the trace says about how much of a step is fixed cost per op rather than work that grows with the batch."""

    batch_size: int | None
    basis: TimeBasis
    ops_per_step: float  # top-level CPU operators (host basis) or kernels (device basis) per step
    median_op_us: float
    short_op_share: float  # of the ops' time, the part in ops shorter than the threshold
    gpu_idle_share: float | None  # device basis: share of the step the GPU had no work
    median_conv_flops: float | None  # per call
    median_conv_pct_of_roofline: float | None


def overhead_facts(analysis: ConvAnalysis, short_op_us: float, short_kernel_us: float) -> OverheadFacts:
    """The per-op overhead facts of a profile: op counts and durations, GPU idle time, conv work per call."""
    profile = analysis.profile
    steps = profile.step_count
    if analysis.time_basis is TimeBasis.DEVICE:
        compute = EventKind.KERNEL
        durations = [k.dur_us for k in profile.kernels if k.kind is compute]
        threshold = short_kernel_us
        timeline = analysis.gpu_timeline
        idle = timeline.idle_share if timeline is not None else None
    else:
        durations = [op.dur_us for op in profile.outermost_cpu_ops]
        threshold, idle = short_op_us, None
    total = sum(durations)
    rooflines = analyze_roofline(analysis).layers if analysis.layers else {}
    flops = [layer.flops for layer in analysis.layers if layer.flops]
    pcts = [point.pct_of_roofline for point in rooflines.values()]
    recorded = profile.environment.batch_size
    first = analysis.layers[0] if analysis.layers else None
    batch = recorded if recorded is not None else (first.input_shape[0] if first and first.input_shape else None)
    return OverheadFacts(
        batch_size=batch,
        basis=analysis.time_basis,
        ops_per_step=len(durations) / steps,
        median_op_us=statistics.median(durations) if durations else 0.0,
        short_op_share=sum(d for d in durations if d < threshold) / total if total > 0 else 0.0,
        gpu_idle_share=idle,
        median_conv_flops=statistics.median(flops) if flops else None,
        median_conv_pct_of_roofline=statistics.median(pcts) if pcts else None,
    )


@dataclass(frozen=True)
class BatchSizeEvidence:
    """The overhead facts that call the step per-op bound (OverheadFacts), with the threshold of a short op."""

    batch_size: int | None
    time_basis: str  # TimeBasis value: "host" ops or "device" kernels
    ops_per_step: float
    median_op_us: float
    short_op_threshold_us: float
    short_op_share: float
    gpu_idle_share: float | None
    median_conv_flops_per_call: float | None
    median_conv_pct_of_roofline: float | None

    def message(self) -> str:
        unit = "kernels" if self.time_basis == TimeBasis.DEVICE.value else "top-level ops"
        roof = (f"; conv layers run at a median {self.median_conv_pct_of_roofline:.2g}% of the roofline"
                if self.median_conv_pct_of_roofline is not None else "")
        work = (f", median conv {self.median_conv_flops_per_call / 1e6:.2f} MFLOP per call"
                if self.median_conv_flops_per_call is not None else "")
        idle = f", GPU idle {self.gpu_idle_share:.0%} of the step" if self.gpu_idle_share is not None else ""
        return (f"batch {self.batch_size}: {self.ops_per_step:.0f} {unit} per step, median {self.median_op_us:.1f} µs; "
                f"{self.short_op_share:.0%} of their time is in ones under {self.short_op_threshold_us:g} µs"
                f"{idle}{work}{roof}")


class BatchSizeRule:
    """A small batch whose step time is mostly the fixed cost of launching many short ops."""

    id = "CD106"
    name = "batch-size"
    summary = "Small batch, step dominated by per-op overhead: a larger batch raises samples/s"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS})
    max_batch = 16  # Options: batches above this are not called small
    short_op_us = 50.0  # Options: host basis: a top-level CPU operator shorter than this is mostly overhead
    short_kernel_us = 10.0  # Options: device basis: a kernel shorter than this is mostly launch cost
    min_short_share = 0.5  # Options: share of op (or kernel) time in short ones from which the step is overhead-bound
    min_gpu_idle_share = 0.5  # Options: device basis: or this share of the step with the GPU idle
    small_conv_flops = 2e6  # Options: host basis: median conv FLOPs per call below this is less work than overhead
    small_conv_flops_gpu = 50e6  # Options: device basis: the same for a GPU (about 5 µs of launch cost at ~10 TFLOP/s)
    doc = """\
## What it detects
A step run with a small batch (`batch_size` at most `max_batch`) whose time is mostly fixed per-op cost. Either
the conv layers do little work per call: their median FLOPs per call is under `small_conv_flops` on a CPU
(`small_conv_flops_gpu` on a GPU), about what the fixed cost of one op is worth; or the timings show it: on a
CPU, at least `min_short_share` of the time in top-level operators is spent in operators shorter than
`short_op_us` each; on a GPU, at least `min_short_share` of the kernel time is in kernels shorter than
`short_kernel_us`, or the GPU is idle for at least `min_gpu_idle_share` of the step. The conv layers'
percentage of the roofline is reported with it: far below the roofline with little work per call is the same
story told by the convolutions. The FLOP test does not depend on how busy the machine was; the timings do.

## Why it is slow
Every operator pays a fixed cost whatever its size: Python and dispatcher overhead, allocating the output,
choosing a kernel, a kernel launch (5-10 µs on a GPU), thread-pool wake-up on a CPU. With one or a few samples
per call that fixed cost can be most of the op's time, and the cores or the GPU's SMs sit mostly unused because
each op has too little work to spread over them. A larger batch does more work per op for the same fixed
cost: time per step grows more slowly than the batch, so samples per second go up, until the device is busy
(or memory runs out). This changes the workload, not the model: latency per call grows, memory grows, and in
training the learning rate usually has to follow the batch. It is therefore measured in samples per second and
is never a step of the combined plan.

## Example
```python
model.eval()
for image in images:                      # one sample per call
    with torch.no_grad():
        out = model(image.unsqueeze(0))
```

## Use instead
```python
loader = torch.utils.data.DataLoader(images, batch_size=32)
for batch in loader:
    with torch.no_grad():
        out = model(batch)                # 32 samples share each op's fixed cost
```
In a server, batch requests dynamically (collect for a few milliseconds, run once). Where the batch cannot
grow, CUDA graphs (`torch.compile(mode="reduce-overhead")`) cut the launch cost instead.

## Evidence
The batch size convdoctor recorded at capture (else the first dim of the first conv layer's input), the
number of top-level CPU operators per step (operators no other operator encloses) and their durations (host
basis), or the number and durations of GPU kernels and the GPU's idle share of each step (device basis); each
conv layer's FLOPs per call and its percentage of the roofline. When measured, convdoctor calls the model
file's `get_inputs(batch_size)` with 2×, 4×, 8× and 16× the batch and times each against the original batch in
interleaved rounds, dividing each step's time by its batch size; it stops after two batches in a row that are not
measurably faster per sample than the best before them (one size can hit a worse kernel than the next), when
memory runs out (the error is reported), or after the sweep's time budget (60 s, or what is left of
`--time-budget`). Without `get_inputs(batch_size)` in the model file the finding says so and is not measured.

## Options
`max_batch` (samples, default 16): larger batches are not called small.
`short_op_us` (µs, default 50): host basis: a top-level CPU operator shorter than this counts as overhead.
`short_kernel_us` (µs, default 10): device basis: a kernel shorter than this counts as launch-bound.
`min_short_share` (fraction, default 0.5): share of op or kernel time in short ones that makes the step
overhead-bound.
`min_gpu_idle_share` (fraction of the step, default 0.5): device basis: GPU idle time that does the same.
`small_conv_flops` (FLOPs per call, default 2e6): host basis: median conv work under this is overhead-sized
(2 MFLOP is 20-40 µs at the tens of GFLOP/s a CPU core reaches, the order of one op's fixed cost).
`small_conv_flops_gpu` (FLOPs per call, default 5e7): device basis: the same for a GPU.

## References
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html
- https://docs.nvidia.com/deeplearning/performance/dl-performance-getting-started/index.html
- https://arxiv.org/abs/1706.02677 (Goyal et al., large minibatch training: scaling the learning rate)
"""

    def overhead_bound(self, facts: OverheadFacts) -> bool:
        """Whether the facts show a small batch with a step dominated by fixed per-op cost."""
        if facts.batch_size is None or facts.batch_size > self.max_batch or facts.ops_per_step == 0:
            return False
        idle = facts.gpu_idle_share is not None and facts.gpu_idle_share >= self.min_gpu_idle_share
        small = self.small_conv_flops_gpu if facts.basis is TimeBasis.DEVICE else self.small_conv_flops
        little_work = facts.median_conv_flops is not None and facts.median_conv_flops < small
        return little_work or facts.short_op_share >= self.min_short_share or idle

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        facts = overhead_facts(analysis, self.short_op_us, self.short_kernel_us)
        if not self.overhead_bound(facts):
            return
        threshold = self.short_kernel_us if facts.basis is TimeBasis.DEVICE else self.short_op_us
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Run larger batches",
            advice=("Most of this step is fixed cost per op rather than work that grows with the batch, so more "
                    "samples per call should raise samples/s. This changes the workload, not the model: latency "
                    "per call and memory grow, and in training the learning rate usually scales with the batch. "
                    "It is measured in samples per second and is not part of the combined plan."),
            snippet=SNIPPET,
            layers=[layer.name for layer in analysis.layers],
            evidence=_evidence(facts, threshold),
            estimated_saving=None,  # a per-sample gain is not a share of this step: only the measurement speaks
            larger_batches=LargerBatches(),
        )


def _evidence(facts: OverheadFacts, threshold_us: float) -> BatchSizeEvidence:
    return BatchSizeEvidence(
        batch_size=facts.batch_size,
        time_basis=facts.basis.value,
        ops_per_step=facts.ops_per_step,
        median_op_us=facts.median_op_us,
        short_op_threshold_us=threshold_us,
        short_op_share=facts.short_op_share,
        gpu_idle_share=facts.gpu_idle_share,
        median_conv_flops_per_call=facts.median_conv_flops,
        median_conv_pct_of_roofline=facts.median_conv_pct_of_roofline,
    )
