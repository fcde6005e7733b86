"""CD122 pageable-htod: host-to-device copies from pageable memory block the host inside the step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.analyzer.step.pageable_copies import pageable_copies
from convdoctor.rules.base import Finding, Requirement, SavingBound, Severity

SNIPPET = """\
loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=4, pin_memory=True)
for x, y in loader:
    x = x.to("cuda", non_blocking=True)   # from pinned memory: returns at once, overlaps compute
    y = y.to("cuda", non_blocking=True)"""


@dataclass(frozen=True)
class PageableHtodEvidence:
    """The pageable host-to-device copies inside the profiled steps and the host time their calls took."""

    steps: int
    copies_per_step: float
    copy_ms_per_step: float  # device time of the copies
    call_ms_per_step: float  # host time of their launch calls, blocked while the driver stages the data
    calls_found: int  # copies whose launch call is in the trace
    operators: list[str]  # the operators that issued them, most copies first
    step_ms: float

    def message(self) -> str:
        issued = f" by {', '.join(self.operators[:3])}" if self.operators else ""
        host = (f"; their calls block the host {self.call_ms_per_step:.2f} ms per step"
                if self.calls_found else "; their launch calls are not in the trace")
        return (f"{self.copies_per_step:g} host-to-device copies per step from pageable memory{issued}: "
                f"{self.copy_ms_per_step:.2f} ms of copying per {self.step_ms:.1f} ms step{host}")


class PageableHtodRule:
    """Host-to-device copies from pageable memory: synchronous, never overlapped with compute."""

    id = "CD122"
    name = "pageable-htod"
    summary = "Host-to-device copies from pageable memory block the host; pin the memory and copy non-blocking"
    severity = Severity.WARNING
    requires = frozenset({Requirement.DEVICE_KERNELS})
    # Options (see the doc):
    min_share = 0.005  # of step time
    doc = """\
## What it detects
Memcpy events that Kineto names `Memcpy HtoD (Pageable -> Device)` inside the profiled steps: tensors copied
to the GPU from ordinary (pageable) host memory, as `x.cuda()` or `x.to("cuda")` does for a tensor a
DataLoader built without `pin_memory=True`.

## Why it is slow
The GPU's copy engine reads only page-locked memory: the driver first copies a pageable tensor into a pinned
staging buffer, and the launching call (`cudaMemcpyAsync`) returns only after that. The host is blocked for the
copy, and `non_blocking=True` does nothing for it; the copy cannot overlap the previous step's compute.

## Example
```python
loader = DataLoader(dataset, batch_size=64)
for x, y in loader:
    x, y = x.cuda(), y.cuda()
```

## Use instead
```python
loader = DataLoader(dataset, batch_size=64, pin_memory=True)
for x, y in loader:
    x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
```
The copies are in the training loop, not in the model: convdoctor cannot apply this fix to a copy of the
workload, so the finding carries its predicted saving, not measured.

## Evidence
Per step: the pageable host-to-device memcpys (count, device time), the host time of their launch calls
(paired by correlation id) and the operators that issued them (`aten::copy_`, `aten::to`...).

## Options
- `min_share` (fraction of step time, default 0.005): report when the copies' calls (or, without calls in
  the trace, the copies) take at least this share of the step.

## References
- https://pytorch.org/docs/stable/data.html#memory-pinning
- https://developer.nvidia.com/blog/how-optimize-data-transfers-cuda-cc/
- https://pytorch.org/tutorials/intermediate/pinmem_nonblock.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        copies = pageable_copies(analysis.profile)
        step_us = analysis.profile.step_time_us
        if not copies.copies or step_us <= 0:
            return
        steps = max(1, copies.steps)
        at_stake_us = (copies.call_us if copies.calls_found else copies.copy_us) / steps
        if at_stake_us < self.min_share * step_us:
            return
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Pin host memory (DataLoader pin_memory=True) and copy with .to(device, non_blocking=True)",
            advice=("Build batches in pinned memory (DataLoader(..., pin_memory=True), or tensor.pin_memory()) and "
                    "copy them with .to(device, non_blocking=True): the call returns at once and the copy overlaps "
                    "compute. The copies are made by the training loop, which convdoctor cannot change: the saving "
                    "below is predicted from the trace, not measured."),
            snippet=SNIPPET,
            evidence=PageableHtodEvidence(
                steps=steps, copies_per_step=copies.copies / steps, copy_ms_per_step=copies.copy_us / steps / 1e3,
                call_ms_per_step=copies.call_us / steps / 1e3, calls_found=copies.calls_found,
                operators=list(copies.operators), step_ms=step_us / 1e3),
            # the host time blocked in the calls: an asynchronous copy from pinned memory returns at once
            estimated_saving=min(1.0, at_stake_us / step_us),
            saving_bound=SavingBound.ESTIMATE if copies.calls_found else SavingBound.AT_MOST,
            candidate=None,  # the copies are in the user's training loop: no automatic candidate
        )
