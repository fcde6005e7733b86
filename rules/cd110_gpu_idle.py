"""CD110 gpu-idle: the GPU waits on the host for a large share of each step, which no conv-level fix recovers."""

from __future__ import annotations

import bisect
import functools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from convdoctor.analyzer.conv.gpu_timeline import GpuTimeline
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.analyzer.trace.profile import EventKind, Op, Profile
from convdoctor.rules.base import Finding, Requirement, Severity

STEP_OP = re.compile(r"^ProfilerStep#\d+$")
DATA_LOADER = re.compile(r"DataLoader", re.IGNORECASE)
PAGEABLE_HTOD = re.compile(r"HtoD.*Pageable|Pageable.*HtoD", re.IGNORECASE)

SNIPPETS = {
    "input_pipeline": """\
loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=8, pin_memory=True,
                                     persistent_workers=True, prefetch_factor=4)
for x, y in loader:
    x = x.cuda(non_blocking=True)
    y = y.cuda(non_blocking=True)
    ...""",
    "host_stall": """\
# keep values on the GPU inside the step; read them back once every N steps
running_loss += loss.detach()          # not loss.item()
if step % 100 == 0:
    print(running_loss.item() / 100)""",
    "launch_bound": """\
model = torch.compile(model, mode="reduce-overhead")  # CUDA graphs: one launch replays the whole step
# or capture the step yourself: torch.cuda.graphs.make_graphed_callables(model, (x,))
# and give each kernel more work: a larger batch""",
}
SNIPPETS["host_overhead"] = SNIPPETS["launch_bound"]

FIXES = {
    "input_pipeline": "Feed the GPU faster: DataLoader workers, pinned memory and non-blocking copies",
    "host_stall": "Take the host work out of the step's critical path",
    "launch_bound": "Launch fewer, larger kernels: CUDA graphs (torch.compile reduce-overhead) or a larger batch",
    "host_overhead": "Cut host overhead between kernels: torch.compile or CUDA graphs",
}


@dataclass(frozen=True)
class HostEvent:
    """A host event at the top of the step that runs while the GPU idles in long gaps."""

    name: str
    ms_per_step: float  # of its time inside the gaps


@dataclass(frozen=True)
class GpuIdleEvidence:
    """The GPU timeline of the busiest device, per step, and what the host does while the GPU idles."""

    cause: str  # a key of FIXES
    device: int | None
    steps: int
    idle_share: float  # of step time
    idle_ms_per_step: float
    busy_ms_per_step: float
    step_ms: float
    long_gap_idle_ms_per_step: float
    short_gap_idle_ms_per_step: float
    long_gaps_per_step: float
    gaps_per_step: float
    kernels_per_step: float
    median_kernel_us: float
    host_events_in_long_gaps: list[HostEvent]  # the three longest
    pageable_htod_copies_per_step: float
    pageable_htod_ms_per_step: float
    long_gap_ms: float = field(metadata={"serialize": False})  # the option: a gap at least this long is a host stall

    def message(self) -> str:
        idle = (f"GPU idle {self.idle_share:.0%} of each step ({self.idle_ms_per_step:.1f} of "
                f"{self.step_ms:.1f} ms)")
        long_gaps = round(self.long_gaps_per_step * self.steps)
        if self.cause in ("input_pipeline", "host_stall"):
            hosts = self.host_events_in_long_gaps
            top = hosts[0].name if hosts else "host work the trace does not name"
            detail = (f"{self.long_gap_idle_ms_per_step:.1f} ms per step in {long_gaps} gap(s) of "
                      f"\u2265{self.long_gap_ms:g} ms over {self.steps} step(s) while the host runs {top}")
        else:
            short_gaps = (round(self.gaps_per_step * self.steps) - long_gaps) / self.steps
            detail = (f"{self.short_gap_idle_ms_per_step:.1f} ms per step in {short_gaps:.0f} short gaps between "
                      f"{self.kernels_per_step:.0f} kernels of median {self.median_kernel_us:g} \u00b5s")
        return f"{idle}; {detail}"


class GpuIdleRule:
    """The GPU sits idle for a large share of each step while the host loads data, synchronizes or launches."""

    id = "CD110"
    name = "gpu-idle"
    summary = "The GPU is idle for a large share of each step, waiting on the host"
    severity = Severity.WARNING
    requires = frozenset({Requirement.DEVICE_KERNELS})
    # Options (see the doc):
    min_idle_share = 0.2  # fraction of the step
    long_gap_us = 1000.0  # µs
    launch_bound_kernel_us = 20.0  # µs
    launch_bound_min_kernels = 100  # kernels per step
    doc = """\
## What it detects
Steps in which the GPU runs nothing for a large share of the time: the union of all kernels, memcpys and
memsets on the device, over all streams, covers too little of the step. It then tells apart the usual causes
from the shape of the idle time: long gaps while the host runs the input pipeline (a DataLoader) or other
host work, or many short gaps between many short kernels (launch-bound).

## Why it is slow
While the GPU idles, the step is bound by the host: every conv-level fix (layouts, precision, algorithms)
shortens only the busy part, and the step time hardly moves. A single-process DataLoader decoding and
augmenting images, pageable host-to-device copies, `.item()`/`.cpu()` synchronizations, and Python overhead
per launched kernel (a few µs each, against kernels that run for 2 µs) all show up as GPU idle time.

## Example
```python
loader = DataLoader(dataset, batch_size=32)   # num_workers=0: batches are built in the training process
for x, y in loader:
    loss = criterion(model(x.cuda()), y.cuda())
    print(loss.item())                           # a synchronization every step
```

## Use instead
```python
loader = DataLoader(dataset, batch_size=32, num_workers=8, pin_memory=True, persistent_workers=True)
for x, y in loader:
    loss = criterion(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
```
When the idle time is spread over many short gaps between short kernels (launch-bound), use CUDA graphs
(`torch.compile(model, mode="reduce-overhead")`) and a larger batch so that each kernel does more work.

## Evidence
The GPU timeline of the busiest device: per step, the union of kernel/memcpy/memset intervals within the
`ProfilerStep#N` span, the idle gaps left, the number of kernels and their median duration. The host
events (direct children of the step) that run during the long gaps, and pageable host-to-device memcpys.

## Options
- `min_idle_share` (fraction of step time, default 0.2): report when the GPU is idle for at least this share.
- `long_gap_us` (µs, default 1000): an idle gap at least this long is a host stall (data loading, host
  work, a synchronization); shorter gaps are launch latency between kernels.
- `launch_bound_kernel_us` (µs, default 20): when most idle time is in short gaps and the median kernel
  is shorter than this, the step is launch-bound.
- `launch_bound_min_kernels` (kernels per step, default 100): fewer kernels than this are never called
  launch-bound.

## References
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html
- https://pytorch.org/docs/stable/data.html#memory-pinning
- https://pytorch.org/blog/accelerating-pytorch-with-cuda-graphs/
- https://github.com/facebookresearch/HolisticTraceAnalysis (temporal breakdown, idle time)
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        timeline = analysis.gpu_timeline
        if timeline is None or timeline.span_us <= 0 or timeline.idle_share < self.min_idle_share:
            return
        steps = len(timeline.steps)
        long_gaps = [gap for s in timeline.steps for gap in s.gaps if gap[1] - gap[0] >= self.long_gap_us]
        all_gaps = sum(len(s.gaps) for s in timeline.steps)
        long_idle_us = sum(end - start for start, end in long_gaps) / steps
        short_idle_us = timeline.idle_us - long_idle_us
        hosts = _host_events_in(profile, long_gaps)
        cause = self._cause(timeline, long_idle_us, hosts)
        memcpy = EventKind.MEMCPY
        pageable = [k for k in profile.kernels if k.kind is memcpy and PAGEABLE_HTOD.search(k.name)
                    and k.device == timeline.device and any(s.ts_us <= k.ts_us < s.ts_us + s.span_us
                                                            for s in timeline.steps)]
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix=FIXES[cause],
            advice=self._advice(cause, timeline, pageable),
            snippet=SNIPPETS[cause],
            layers=[],
            evidence=GpuIdleEvidence(
                cause=cause,
                device=timeline.device,
                steps=steps,
                idle_share=timeline.idle_share,
                idle_ms_per_step=timeline.idle_us / 1e3,
                busy_ms_per_step=timeline.busy_us / 1e3,
                step_ms=timeline.span_us / 1e3,
                long_gap_idle_ms_per_step=long_idle_us / 1e3,
                short_gap_idle_ms_per_step=short_idle_us / 1e3,
                long_gaps_per_step=len(long_gaps) / steps,
                gaps_per_step=all_gaps / steps,
                kernels_per_step=timeline.kernels_per_step,
                median_kernel_us=timeline.median_kernel_us,
                host_events_in_long_gaps=[HostEvent(name, us / steps / 1e3) for name, us in hosts[:3]],
                pageable_htod_copies_per_step=len(pageable) / steps,
                pageable_htod_ms_per_step=sum(k.dur_us for k in pageable) / steps / 1e3,
                long_gap_ms=self.long_gap_us / 1e3,
            ),
            estimated_saving=None,  # idle time is an upper bound, not a saving: the host work stays to be done
            candidate=None,  # a data pipeline or a capture into CUDA graphs cannot be applied automatically
        )

    def _cause(self, timeline: GpuTimeline, long_idle_us: float, hosts: list[tuple[str, float]]) -> str:
        if long_idle_us >= 0.5 * timeline.idle_us:
            return "input_pipeline" if hosts and DATA_LOADER.search(hosts[0][0]) else "host_stall"
        short_kernels = timeline.median_kernel_us < self.launch_bound_kernel_us
        if short_kernels and timeline.kernels_per_step >= self.launch_bound_min_kernels:
            return "launch_bound"
        return "host_overhead"

    def _advice(self, cause: str, timeline: GpuTimeline, pageable: list) -> str:
        if cause == "input_pipeline":
            advice = ("The GPU waits for the next batch. Build batches in DataLoader worker processes "
                      "(num_workers, persistent_workers, prefetch_factor), pin host memory (pin_memory=True) and "
                      "copy with .cuda(non_blocking=True) so that the copy overlaps compute; move decoding and "
                      "augmentation off the training process or onto the GPU (e.g. DALI).")
            if pageable:
                advice += " The trace shows host-to-device copies from pageable memory, which cannot overlap."
            return advice
        if cause == "host_stall":
            return ("The GPU waits while the host does other work inside the step. Look at the host events named "
                    "in the evidence: avoid synchronizations (.item(), .cpu(), printing tensors, "
                    "torch.cuda.synchronize) inside the step, and move logging, checkpointing and metric "
                    "computation out of it or onto a side thread.")
        if cause == "launch_bound":
            return (f"The step launches {timeline.kernels_per_step:.0f} kernels with a median of "
                    f"{timeline.median_kernel_us:g} \u00b5s: the GPU finishes each one before the host has launched "
                    "the next. Replay the step as a CUDA graph (torch.compile(mode=\"reduce-overhead\") or "
                    "torch.cuda.graphs), fuse small ops (torch.compile), and use a larger batch so that each "
                    "kernel does more work.")
        return ("Idle time is spread over short gaps between kernels: host overhead per operator (Python, "
                "dispatcher, allocator) keeps the GPU waiting. torch.compile fuses operators and, with "
                "mode=\"reduce-overhead\", replays them as CUDA graphs.")


def _host_events_in(profile: Profile, gaps: list[tuple[float, float]]) -> list[tuple[str, float]]:
    """Host events at the top of the step (children of ``ProfilerStep#N``) that overlap the gaps, by overlap."""
    if not gaps:
        return []
    overlap: dict[str, float] = defaultdict(float)
    first, last = min(g[0] for g in gaps), max(g[1] for g in gaps)
    ordered = sorted(gaps)  # by start, so that each op looks only at the gaps near it: linear in a long trace
    starts = [start for start, _ in ordered]
    longest = max(end - start for start, end in ordered)
    for op in profile.ops:
        if op.ts_us >= last:
            break
        parent = op.parent  # _top_of_step's first test inlined: it rules out most events
        if parent is not None and not _is_step(parent.name):
            continue
        if op.end_us <= first or not _top_of_step(op):
            continue
        near = ordered[bisect.bisect_left(starts, op.ts_us - longest):bisect.bisect_left(starts, op.end_us)]
        for start, end in near:
            shared = min(op.end_us, end) - max(op.ts_us, start)
            if shared > 0:
                overlap[op.name] += shared
    return sorted(overlap.items(), key=lambda item: item[1], reverse=True)


def _top_of_step(op: Op) -> bool:
    if op.parent is not None and not _is_step(op.parent.name):  # most events: checked first
        return False
    return op.kind in (EventKind.CPU_OP, EventKind.ANNOTATION) and not _is_step(op.name)


@functools.cache  # a trace repeats a few hundred names over hundreds of thousands of events
def _is_step(name: str) -> bool:
    return STEP_OP.match(name) is not None
