"""CD123 sync-in-step: the host waits for the GPU inside the step (``.item()``, ``.cpu()``, synchronize)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.analyzer.step.syncs import synchronizations
from convdoctor.rules.base import Finding, Requirement, SavingBound, Severity

SNIPPET = """\
running_loss = torch.zeros((), device="cuda")
for step, (x, y) in enumerate(loader):
    loss = criterion(model(x), y)
    ...
    running_loss += loss.detach()            # not loss.item(): no synchronization
    if step % 100 == 0:
        print(running_loss.item() / 100)     # one synchronization every 100 steps
        running_loss.zero_()"""


@dataclass(frozen=True)
class SyncSiteEvidence:
    """One place that synchronizes: the runtime call, the operator around it, the line of code where known."""

    call: str
    operator: str
    source: str | None
    per_step: float
    blocked_ms_per_step: float


@dataclass(frozen=True)
class SyncInStepEvidence:
    """The synchronizations inside the profiled steps (pageable copies' own waits left to CD122)."""

    steps: int
    syncs_per_step: float
    blocked_ms_per_step: float
    step_ms: float
    sites: list[SyncSiteEvidence]  # the three that blocked longest
    has_python_stacks: bool

    def message(self) -> str:
        top = self.sites[0]
        where = f" at {top.source}" if top.source else ""
        return (f"{self.syncs_per_step:g} synchronizations per step block the host {self.blocked_ms_per_step:.2f} ms "
                f"of a {self.step_ms:.1f} ms step; most in {top.call} under {top.operator}{where}")


class SyncInStepRule:
    """The host blocks on the GPU inside the step: it stops queueing work, and the GPU then idles."""

    id = "CD123"
    name = "sync-in-step"
    summary = "The host waits for the GPU inside the step (.item(), .cpu(), nonzero, synchronize)"
    severity = Severity.WARNING
    requires = frozenset({Requirement.DEVICE_KERNELS})
    # Options (see the doc):
    min_share = 0.0  # of step time
    doc = """\
## What it detects
CUDA runtime calls that block the host until the device has caught up (`cudaStreamSynchronize`,
`cudaDeviceSynchronize`, `cudaEventSynchronize`, synchronous `cudaMemcpy`) inside the profiled steps, each
charged to the operator the program called: `aten::item` / `aten::_local_scalar_dense` (`.item()`),
`aten::nonzero`, `aten::to` / `aten::copy_` to the CPU (`.cpu()`, `.tolist()`), or none
(`torch.cuda.synchronize()`). With Python stacks in the trace (`with_stack=True`) it names the user function.
Synchronizations of copies from pageable memory are left to CD122.

## Why it is slow
A synchronization empties the GPU's queue: the host waits for all queued work, then launches the next kernel
on an idle device. The wait itself is blocked time, and the launches after it start from an empty queue, so the
GPU idles while the host catches up. A loss printed with `.item()` every step costs this every step.

## Example
```python
for x, y in loader:
    loss = criterion(model(x), y)
    loss.backward(); opt.step()
    total += loss.item()
```

## Use instead
```python
total = torch.zeros((), device="cuda")
for x, y in loader:
    loss = criterion(model(x), y)
    loss.backward(); opt.step()
    total += loss.detach()          # read it once, after the loop or every N steps
```
The synchronizations are usually in the training loop, which convdoctor cannot change: the finding carries
its saving as a bound predicted from the trace, not measured.

## Evidence
Per step: the synchronizing calls inside the steps, their summed duration (time the host was blocked), the
operator around each and the user function where the trace has Python stacks.

## Options
- `min_share` (fraction of step time, default 0): report when the synchronizations block the host for more
  than this share of the step. The default reports any: the blocked time understates the cost, since the GPU
  then idles while the host refills its queue.

## References
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#avoid-unnecessary-cpu-gpu-synchronization
- https://pytorch.org/docs/stable/generated/torch.cuda.set_sync_debug_mode.html
- https://github.com/facebookresearch/HolisticTraceAnalysis (critical path, CUDA synchronization)
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        view = synchronizations(analysis.profile)
        step_us = analysis.profile.step_time_us
        sites = [s for s in view.sites if not s.pageable_copy]
        steps = max(1, view.steps)
        blocked_us = (view.blocked_us - view.pageable_copy_blocked_us) / steps
        if not sites or step_us <= 0 or blocked_us <= self.min_share * step_us:
            return
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Keep values on the GPU inside the step; read them back once every N steps",
            advice=("Each synchronization stops the host until the GPU has drained its queue. Accumulate metrics "
                    "on the device (loss.detach()) and read them every N steps; avoid .item(), .cpu(), .tolist(), "
                    "nonzero/boolean indexing and torch.cuda.synchronize() in the step (torch.cuda."
                    "set_sync_debug_mode('warn') names them). This code is in the training loop, which convdoctor "
                    "cannot change: the saving is a bound from the trace, not measured."),
            snippet=SNIPPET,
            evidence=SyncInStepEvidence(
                steps=steps, syncs_per_step=(view.count - view.pageable_copy_count) / steps,
                blocked_ms_per_step=blocked_us / 1e3, step_ms=step_us / 1e3,
                sites=[SyncSiteEvidence(s.call, s.operator, s.source, s.count / steps, s.blocked_us / steps / 1e3)
                       for s in sites[:3]],
                has_python_stacks=view.has_python_stacks),
            # at most the blocked time: the GPU work the host waited for still has to run
            estimated_saving=min(1.0, blocked_us / step_us),
            saving_bound=SavingBound.AT_MOST,
            candidate=None,  # in the user's training loop: no automatic candidate
        )
