"""CD201 ddp-bucket-overlap: DDP's gradient allreduce runs after the backward instead of during it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import with_ddp
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity

MIB = 2**20
DEFAULT_BUCKET_CAP_MB = 25.0  # DistributedDataParallel's default bucket_cap_mb


@dataclass(frozen=True)
class DdpBucketOverlapEvidence:
    """The allreduce time of a step and how much of it overlaps the backward, on the rank that waits least."""

    comm_ms: float
    exposed_comm_ms: float
    overlap_fraction: float
    buckets_per_step: float
    gradient_mib: float  # record_param_comms' elements x dtype size; 0 when the trace records none
    proposed_bucket_cap_mb: float
    rank: int | None = field(metadata={"serialize": False})  # of a job analyzed whole; None: this trace's rank
    step_ms: float = field(metadata={"serialize": False})
    bucket_cap_mb: float | None = field(metadata={"serialize": False})  # as recorded at capture; None: the default

    def message(self) -> str:
        who = "this rank" if self.rank is None else f"rank {self.rank} (the one that waits least)"
        current = "the default buckets" if self.bucket_cap_mb is None else f"bucket_cap_mb={self.bucket_cap_mb:g}"
        return (f"allreduce on {who}: {self.comm_ms:.1f} ms a step, {self.overlap_fraction:.0%} of it overlapping "
                f"compute; {self.exposed_comm_ms:.1f} ms ({self.exposed_comm_ms / self.step_ms:.0%} of the step) "
                f"exposed, in {self.buckets_per_step:.1f} bucket(s) of {_gradients(self.gradient_mib)} "
                f"with {current}")


class DdpBucketOverlapRule:
    """Exposed allreduce time in a DDP job: few, large buckets that start only when the backward ends."""

    id = "CD201"
    name = "ddp-bucket-overlap"
    summary = "DDP's gradient allreduce overlaps little of the backward; smaller buckets start it earlier"
    severity = Severity.WARNING
    requires = frozenset({Requirement.COMMUNICATION})
    min_exposed_share = 0.05  # fraction of the step
    max_overlap = 0.5  # fraction of the communication time
    target_buckets = 4

    doc = """\
## What it detects
A rank of a DistributedDataParallel job whose gradient allreduce overlaps compute for less than half of its
time, while the exposed part (communication with no compute beside it) takes at least 5% of the step, on
the rank that waits least for the others (so that a straggler's lateness is not taken for communication cost).

## Why it is slow
DDP groups gradients into buckets (`bucket_cap_mb`, 25 MiB by default, 1 MiB for the first) and starts a
bucket's allreduce as soon as all its gradients are ready, while the backward still computes the rest. A
model whose gradients fit in one or two buckets starts its allreduce only when the backward has (nearly)
ended: the whole allreduce is then added to the step instead of hidden under the backward.

## Example
```python
model = DistributedDataParallel(model)  # 11 MB of gradients: 1 bucket of 1 MiB and one of 10 MiB
```

## Use instead
```python
model = DistributedDataParallel(model, bucket_cap_mb=2.5)  # about 4 buckets: allreduce starts mid-backward
```
Too small buckets cost a collective call each (latency); measure, as convdoctor does with the candidate.

## Evidence
The communication view of each rank's trace: the union of `gloo:*`/`nccl:*` collective intervals (or NCCL
kernels) per step, the part of it that intersects other operators or kernels (overlap), and the allreduce
calls per step (`c10d::allreduce_`, one per bucket) with the gradient elements they carry.

## Options
`min_exposed_share` (fraction of step time, default 0.05); `max_overlap` (fraction of communication time,
default 0.5); `target_buckets` (default 4): the candidate's bucket size splits the gradients into this many.

## References
- https://pytorch.org/docs/stable/notes/ddp.html
- https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        view = analysis.communication
        if view is None:
            return
        if analysis.job is not None:
            least = min(analysis.job.ranks, key=lambda r: r.exposed_comm_us / r.step_us if r.step_us else 0.0)
            step_us, comm_us, exposed_us = least.step_us, least.comm_us, least.exposed_comm_us
            overlap, rank = least.overlap_fraction, least.rank
        else:
            step_us, comm_us = view.mean("step_us"), view.mean("comm_us")
            exposed_us, overlap, rank = comm_us - view.mean("overlap_us"), view.overlap_fraction, None
        if step_us <= 0 or exposed_us / step_us < self.min_exposed_share or overlap >= self.max_overlap:
            return
        buckets = view.mean("allreduce_calls")
        gradient_mib = view.mean("allreduce_bytes") / MIB  # record_param_comms' elements x dtype size
        # Without a recorded size the proposal splits DDP's default bucket instead, and the advice says so.
        cap = round(max((gradient_mib or DEFAULT_BUCKET_CAP_MB) / self.target_buckets, 0.25), 2)
        basis = "" if gradient_mib > 0 else (
            f" The trace does not record the gradients' size, so bucket_cap_mb={cap:g} splits DDP's default "
            f"{DEFAULT_BUCKET_CAP_MB:g} MiB bucket instead.")
        recorded = analysis.profile.environment.ddp_bucket_cap_mb
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix=f"Smaller DDP buckets (bucket_cap_mb={cap:g}) so the allreduce starts during the backward",
            advice=(f"The {_gradients(gradient_mib)} go out in {buckets:.1f} allreduce(s) per step, which "
                    "start only when the backward has nearly ended. With about "
                    f"{self.target_buckets} buckets the first ones are reduced while the backward still runs.{basis}"),
            snippet=f"model = DistributedDataParallel(model, bucket_cap_mb={cap:g})",
            evidence=DdpBucketOverlapEvidence(
                comm_ms=comm_us / 1e3, exposed_comm_ms=exposed_us / 1e3, overlap_fraction=overlap,
                buckets_per_step=buckets, gradient_mib=gradient_mib, proposed_bucket_cap_mb=cap, rank=rank,
                step_ms=step_us / 1e3, bucket_cap_mb=recorded),
            candidate=Candidate(title=f"DDP with bucket_cap_mb={cap:g}", transform=partial(with_ddp, bucket_cap_mb=cap),
                                numerics=NumericsContract.EXACT, tolerance=1e-5, stage=PlanStage.WRAPPER),
        )


def _gradients(gradient_mib: float) -> str:
    """The gradients and their size, when the trace records one (0: it records none, which is no size of zero)."""
    return f"{gradient_mib:.1f} MiB of gradients" if gradient_mib > 0 else "gradients (their size is not in the trace)"
