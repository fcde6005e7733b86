"""CD116 torch-compile: eager elementwise and normalization ops between the convs, which a compiler fuses."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from operator import attrgetter
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import compiled
from convdoctor.analyzer.conv.layers import ConvAnalysis, is_conv_op
from convdoctor.analyzer.trace.profile import Op
from convdoctor.rules.base import Finding, Requirement, Severity

COMPILED_REGION = "Torch-Compiled Region"
SNIPPET = """\
model = torch.compile(model)  # compiles on the first call; keep the model object and shapes stable
# with channels_last as well:
model = torch.compile(model.to(memory_format=torch.channels_last))"""


def eager_ops(analysis: ConvAnalysis) -> list[Op]:
    """Outermost operators in the profiled steps that are not convolutions (nor autograd bookkeeping)."""
    profile = analysis.profile
    return [op for op in profile.outermost_cpu_ops
            if not is_conv_op(op.name) and not op.name.startswith("autograd::")
            and (not profile.steps or profile.step_of(op.ts_us) is not None)]


@dataclass(frozen=True)
class TorchCompileEvidence:
    """Eager non-conv ops per step and the time they take."""

    eager_ops_per_step: float
    eager_ms_per_step: float
    eager_share: float  # of step time
    most_common: list[tuple[str, float]]  # (op name, calls per step), the five most frequent

    def message(self) -> str:
        names = ", ".join(name for name, _ in self.most_common[:3])
        return (f"{self.eager_ops_per_step:g} eager non-conv ops per step take {self.eager_ms_per_step:.2f} ms "
                f"({self.eager_share:.0%} of the step), most often {names}")


class TorchCompileRule:
    """Eager non-conv ops take a share of the step that torch.compile would fuse away."""

    id = "CD116"
    name = "torch-compile"
    summary = "Eager elementwise/normalization ops between convs take a share of the step; torch.compile fuses them"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS})
    opt_in = True  # compiling takes seconds to minutes: measured only when asked for (--select CD116)
    min_share = 0.05  # Options: smallest share of the step in eager non-conv ops for the finding
    doc = """\
## What it detects
A model running eagerly (no `Torch-Compiled Region` in the trace) whose non-convolution operators —
batch norm, activations, residual adds, pooling, reshapes — take at least `min_share` of the step.
This rule is opt-in: it runs only with `--select CD116` (or `--select torch-compile`), because its
candidate compiles the model, which takes seconds to minutes on a CPU.

## Why it is slow
In eager mode every operator is a separate kernel (or oneDNN/ATen call) that reads its input from memory
and writes its output back, and pays the framework's dispatch overhead. A compiler fuses chains of
elementwise and normalization ops into the convolution epilogue or into one generated loop, so the
activation crosses memory once.

## Example
```python
model = ResNet18().eval()
out = model(x)  # conv, batch_norm, relu, add: one call each
```

## Use instead
```python
model = torch.compile(model)
out = model(x)  # the first call compiles; later calls run the fused code
```
The first call pays the compilation (reported as the candidate's first step); shapes that change from call
to call trigger recompilation.

## Evidence
The outermost non-conv operators inside the profiled steps: their count per step, time per step and share,
and the most frequent op names; the absence of `Torch-Compiled Region` events, and of a model file that returns
a compiled model (`torch.compile(model)`, profiled with its compiled trace beside the eager one).

## Options
`min_share` (fraction of step time, default 0.05): smallest share of the step spent in eager non-conv ops.

## References
- https://pytorch.org/docs/stable/torch.compiler.html
- https://pytorch.org/tutorials/intermediate/torch_compile_tutorial.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        if any(name.startswith(COMPILED_REGION) for name in set(map(attrgetter("name"), profile.ops))):
            return
        if analysis.compiled is not None and analysis.compiled.by_model_file:
            return  # the model file compiles the model already
        ops = eager_ops(analysis)
        steps = profile.step_count
        eager_us = sum(op.device_time_us() if analysis.time_basis.value == "device" else op.dur_us
                       for op in ops) / steps
        share = analysis.share(eager_us)
        if share < self.min_share:
            return
        common = Counter(op.name for op in ops).most_common(5)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Compile the model with torch.compile",
            advice="torch.compile fuses the elementwise and normalization ops around the convs and removes "
                   "per-op dispatch; combine it with channels_last. The first call compiles (see the "
                   "candidate's first step), and changing input shapes recompile.",
            snippet=SNIPPET,
            layers=[],
            evidence=TorchCompileEvidence(eager_ops_per_step=len(ops) / steps, eager_ms_per_step=eager_us / 1e3,
                                          eager_share=share,
                                          most_common=[(name, count / steps) for name, count in common]),
            estimated_saving=None,  # fusion removes part of this time, how much the trace cannot say
            candidate=Candidate(title="torch.compile(model)", transform=compiled,
                                numerics=NumericsContract.APPROXIMATE, tolerance=1e-3, stage=PlanStage.COMPILER),
        )
