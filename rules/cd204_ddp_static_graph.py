"""CD204 ddp-static-graph: DDP searches the autograd graph for unused parameters, or cannot assume a static one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import with_ddp
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity


@dataclass(frozen=True)
class DdpStaticGraphEvidence:
    """DDP's graph settings as recorded at capture."""

    static_graph: bool
    find_unused_parameters: bool | None  # None: not recorded

    def message(self) -> str:
        if self.find_unused_parameters is True:
            return "DDP runs with find_unused_parameters=True: a search of the autograd graph every step"
        return "DDP runs with static_graph=False: it cannot assume the same graph every step"


class DdpStaticGraphRule:
    """A DDP job run without static_graph, or with find_unused_parameters: overhead every step, measured."""

    id = "CD204"
    name = "ddp-static-graph"
    summary = "DDP runs without static_graph=True (or with find_unused_parameters); a fixed graph needs neither"
    severity = Severity.INFO
    requires = frozenset({Requirement.COMMUNICATION})

    doc = """\
## What it detects
A rank of a DistributedDataParallel job captured by convdoctor whose recorded settings have
`static_graph=False`, or `find_unused_parameters=True`.

## Why it is slow
With `find_unused_parameters=True` DDP walks the autograd graph after every forward to find parameters that
get no gradient, and marks them ready itself: work on the critical path of each step. `static_graph=True`
tells DDP the set of used parameters and the bucket order never change: it skips that search, keeps the
rebuilt bucket order, and supports activation checkpointing and unused parameters without the per-step cost.
The gain is often small on a small model: the candidate is measured on the whole job.

## Example
```python
model = DistributedDataParallel(model, find_unused_parameters=True)
```

## Use instead
```python
model = DistributedDataParallel(model, static_graph=True)  # the same parameters are used in every step
```
Only when the graph is the same in every iteration: not with data-dependent control flow over parameters.

## Evidence
The DDP settings convdoctor records into each rank's trace at capture (`ddp_static_graph`,
`ddp_find_unused_parameters`), and the presence of collective communication in the trace.

## Options
None.

## References
- https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        env = analysis.profile.environment
        static, unused = env.ddp_static_graph, env.ddp_find_unused_parameters
        if analysis.communication is None or static is not False:
            return  # not captured by convdoctor (settings unknown), or already static
        searching = unused is True
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=Severity.WARNING if searching else self.severity,
            fix="Declare the graph static: DistributedDataParallel(model, static_graph=True)",
            advice=("If every step uses the same parameters in the same order, static_graph=True lets DDP skip "
                    "the per-step bookkeeping (and the unused-parameter search). Measured on the whole job."),
            snippet="model = DistributedDataParallel(model, static_graph=True)",
            evidence=DdpStaticGraphEvidence(static_graph=static, find_unused_parameters=unused),
            candidate=Candidate(title="DDP with static_graph=True",
                                transform=partial(with_ddp, static_graph=True, find_unused_parameters=False),
                                numerics=NumericsContract.EXACT, tolerance=1e-5, stage=PlanStage.WRAPPER),
        )
