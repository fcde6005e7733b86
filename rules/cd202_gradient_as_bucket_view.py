"""CD202 gradient-as-bucket-view: DDP copies every gradient into its bucket and back, each step."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import with_ddp
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity


@dataclass(frozen=True)
class GradientAsBucketViewEvidence:
    """The time of DDP's gradient copies into and out of its buckets, per step."""

    copy_ms: float
    step_ms: float

    def message(self) -> str:
        share = self.copy_ms / self.step_ms
        return f"DDP's gradient copies take {self.copy_ms:.2f} ms a step ({share:.1%} of the step)"


class GradientAsBucketViewRule:
    """Time in DDP's gradient copies, which gradient_as_bucket_view=True removes."""

    id = "CD202"
    name = "gradient-as-bucket-view"
    summary = "DDP copies gradients between .grad and its buckets; gradient_as_bucket_view=True avoids the copies"
    severity = Severity.INFO
    requires = frozenset({Requirement.COMMUNICATION})
    min_share = 0.005  # fraction of the step

    doc = """\
## What it detects
A rank of a DistributedDataParallel job that spends at least 0.5% of its step in DDP's copies of gradients
between the parameters' `.grad` tensors and the flat allreduce buckets.

## Why it is slow
By default each gradient lives in its own tensor: DDP copies it into a bucket before the allreduce and the
reduced values back into `.grad` after. The copies cost memory bandwidth and as much memory again as the
gradients. With `gradient_as_bucket_view=True` the `.grad` tensors are views into the buckets: no copies.

## Example
```python
model = DistributedDataParallel(model)
```

## Use instead
```python
model = DistributedDataParallel(model, gradient_as_bucket_view=True)
```
Code that replaces `.grad` (`p.grad = ...`) or detaches it in place breaks the view; `zero_grad(set_to_none=True)`
is fine.

## Evidence
The union per step of DDP's copy operators in the trace (`torch.distributed.ddp.reducer::copy_bucket_to_grad`,
`torch::distributed::reducer::mul_out`), against the step time; the recorded `ddp_gradient_as_bucket_view`.

## Options
`min_share` (fraction of step time, default 0.005): smallest share of the step in the copies to report.

## References
- https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        view = analysis.communication
        if view is None or analysis.profile.environment.ddp_gradient_as_bucket_view is True:
            return
        step_us, copy_us = view.mean("step_us"), view.mean("bucket_copy_us")
        if step_us <= 0 or copy_us / step_us < self.min_share:
            return
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Let gradients be views into DDP's buckets (gradient_as_bucket_view=True)",
            advice=("DDP copies each gradient into its allreduce bucket and back into .grad every step. With "
                    "gradient_as_bucket_view=True the gradients live in the buckets: no copies, and less memory."),
            snippet="model = DistributedDataParallel(model, gradient_as_bucket_view=True)",
            estimated_saving=copy_us / step_us,
            evidence=GradientAsBucketViewEvidence(copy_ms=copy_us / 1e3, step_ms=step_us / 1e3),
            candidate=Candidate(title="DDP with gradient_as_bucket_view=True",
                                transform=partial(with_ddp, gradient_as_bucket_view=True),
                                numerics=NumericsContract.EXACT, tolerance=1e-5, stage=PlanStage.WRAPPER),
        )
