"""CD203 ddp-straggler: one rank of a data-parallel job is slower than the others in every step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, SavingBound, Severity

SNIPPETS = {
    "untraced": """\
# the straggler's extra time is outside any operator: load and prepare data ahead of the step
loader = DataLoader(dataset, batch_size=64, num_workers=4, pin_memory=True, persistent_workers=True,
                    sampler=DistributedSampler(dataset))  # the same share of data on every rank""",
    "compute": """\
# the straggler computes more: give every rank the same amount of work
sampler = DistributedSampler(dataset, drop_last=True)  # equal shards
# and the same input sizes on every rank (pad or bucket variable-size inputs)""",
}


@dataclass(frozen=True)
class DdpStragglerEvidence:
    """How much longer one rank works than the others in each step, outside its operators and in them."""

    rank: int
    excess_ms: float
    excess_fraction: float
    extra_untraced_ms: float
    extra_compute_ms: float
    steps: int = field(metadata={"serialize": False})
    excess_low_ms: float = field(metadata={"serialize": False})  # the range of the excess over the steps
    excess_high_ms: float = field(metadata={"serialize": False})

    def message(self) -> str:
        return (f"rank {self.rank} works {self.excess_ms:.1f} ms (+{self.excess_fraction:.0%}) longer than the "
                f"other ranks in each of {self.steps} steps ({self.excess_low_ms:.1f} to {self.excess_high_ms:.1f} "
                f"ms): {self.extra_untraced_ms:.1f} ms outside any operator, {self.extra_compute_ms:.1f} ms in its "
                "operators")


class DdpStragglerRule:
    """The slowest rank of a job in every profiled step, and where its extra time went."""

    id = "CD203"
    name = "ddp-straggler"
    summary = "One rank works longer than the others every step; they all wait for it in the allreduce"
    severity = Severity.WARNING
    requires = frozenset({Requirement.RANKS})

    doc = """\
## What it detects
In a data-parallel job profiled on every rank (`profile --nproc N`), a rank whose work in the step (the step
less its exposed communication) is the largest in every profiled step, by more than 5% of a step and 1 ms in
each. Smaller or changing differences are reported as undecided, not as a straggler.

## Why it is slow
DDP's allreduce makes every rank wait for the slowest: the job runs at the straggler's pace, and the time
the others spend waiting shows up as their communication. No communication tuning recovers it; the
straggler's own extra work must go.

## Example
```python
for x, y in loader:   # rank 1 reads its shard from a slow disk, or decodes larger images
    loss = model(x).mean()
```

## Use instead
```python
loader = DataLoader(dataset, num_workers=4, pin_memory=True, sampler=DistributedSampler(dataset))
```

## Evidence
Each rank's trace: per profiled step (matched by `ProfilerStep#N`), the step time less the communication that
overlaps no compute; the straggler's extra time split into time in its operators and time outside any
operator (Python, data loading, sleeping, I/O), against the median of the other ranks.

## Options
None: the noise threshold (5% of a step, 1 ms) is fixed in `analyzer/job_view.py`.

## References
- https://pytorch.org/docs/stable/notes/ddp.html
- https://pytorch.org/docs/stable/data.html#torch.utils.data.distributed.DistributedSampler
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        job = analysis.job
        if job is None or job.straggler is None or not job.straggler.decided:
            return
        s = job.straggler
        untraced = s.extra_untraced_us >= s.extra_compute_us
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix=(f"Remove rank {s.rank}'s own delay (data loading, Python, I/O)" if untraced
                 else f"Give rank {s.rank} the same work as the others"),
            advice=(f"Every rank waits for rank {s.rank} in the gradient allreduce, so the job runs at its pace. Its "
                    f"extra time is {s.own_cause}: the cause is on that rank, not in the job's communication."),
            snippet=SNIPPETS["untraced" if untraced else "compute"],
            layers=[],
            evidence=DdpStragglerEvidence(
                rank=s.rank, excess_ms=s.excess_us / 1e3, excess_fraction=s.excess_fraction,
                extra_untraced_ms=s.extra_untraced_us / 1e3, extra_compute_ms=s.extra_compute_us / 1e3, steps=s.steps,
                excess_low_ms=s.excess_low_us / 1e3, excess_high_ms=s.excess_high_us / 1e3),
            estimated_saving=min(1.0, s.excess_us / max(r.step_us for r in job.ranks)),
            saving_bound=SavingBound.AT_MOST,  # the job waits for the straggler's extra time, no more
        )
