"""CD104 cudnn-benchmark: fixed input shapes on CUDA with cuDNN's autotuner off (or not known to be on)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import backend_flags
from convdoctor.analyzer.conv.layers import ConvAnalysis, TimeBasis
from convdoctor.rules.base import Finding, Requirement, Severity

SNIPPET = """\
import torch

torch.backends.cudnn.benchmark = True  # once, before the first step: cuDNN times its algorithms per shape
# leave it off when input shapes change every step (variable image sizes, last smaller batch is fine)"""


@dataclass(frozen=True)
class BenchmarkFacts:
    """What a trace says about cuDNN's autotuner and the conv shapes it would tune for."""

    recorded: bool | None  # torch.backends.cudnn.benchmark at capture; None when the trace does not record it
    on_cuda: bool
    steps: int
    fixed_shapes: bool  # every profiled step ran the same multiset of conv input shapes
    distinct_shapes: int
    conv_kernels: list[str]  # the distinct conv kernel names, in order of first launch


UNKNOWN = "unknown (not recorded in the trace)"


@dataclass(frozen=True)
class CudnnBenchmarkEvidence:
    """The recorded setting (UNKNOWN where the trace has none) and the conv shapes the autotuner would tune for."""

    cudnn_benchmark: bool | str
    profiled_steps: int
    fixed_shapes: bool
    distinct_conv_input_shapes: int
    conv_kernels: list[str]  # the first 10 distinct conv kernel names

    def message(self) -> str:
        known = isinstance(self.cudnn_benchmark, bool)  # and False: a finding is for a setting that is not on
        state = "off (recorded at capture)" if known else "unknown (the trace does not record it)"
        shapes = self.distinct_conv_input_shapes
        steps = (f"the same {shapes} conv input shape(s) in each of {self.profiled_steps} steps"
                 if self.profiled_steps > 1 else f"{shapes} conv input shape(s) in the one profiled step")
        return f"torch.backends.cudnn.benchmark is {state}, with {steps} on CUDA"


def benchmark_facts(analysis: ConvAnalysis) -> BenchmarkFacts:
    """The cudnn.benchmark setting convdoctor recorded (if any) and whether the conv shapes repeat each step."""
    profile = analysis.profile
    recorded = profile.environment.cudnn_benchmark
    per_step = _shapes_per_step(analysis)
    distinct = {shape for shapes in per_step.values() for shape in shapes}
    return BenchmarkFacts(
        recorded=recorded,
        on_cuda=analysis.time_basis is TimeBasis.DEVICE,
        steps=len(per_step),
        fixed_shapes=bool(distinct) and len({frozenset(shapes.items()) for shapes in per_step.values()}) <= 1,
        distinct_shapes=len(distinct),
        conv_kernels=list(dict.fromkeys(name for layer in analysis.layers for name in layer.kernel_names)),
    )


def _shapes_per_step(analysis: ConvAnalysis) -> dict[int | None, Counter]:
    """Per profiled step, how often each conv input shape ran (the conv calls: outermost conv ops only)."""
    profile = analysis.profile
    shapes: dict[int | None, Counter] = defaultdict(Counter)
    for op in analysis.calls:
        if not op.input_dims:
            continue
        step = profile.step_of(op.ts_us)
        shapes[step.number if step else None][tuple(tuple(d) for d in op.input_dims[:2] if isinstance(d, list))] += 1
    return shapes


class CudnnBenchmarkRule:
    """cuDNN's autotuner off while every step runs the same conv shapes on CUDA."""

    id = "CD104"
    name = "cudnn-benchmark"
    summary = "torch.backends.cudnn.benchmark is off while conv shapes are fixed: cuDNN may run slower algorithms"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.DEVICE_KERNELS})
    report_unknown = True  # Options: for traces without the recorded setting, an info finding that says unknown
    doc = """\
## What it detects
Conv layers on a CUDA device with `torch.backends.cudnn.benchmark` off, while every profiled step runs the
same conv input shapes. convdoctor records the setting when it captures a trace; for a trace captured
elsewhere the setting is unknown, and the rule then reports an info finding (option `report_unknown`) with the
evidence the trace does hold: whether the shapes are fixed across steps and which conv kernels ran. It never
fires on a CPU run (no cuDNN) or when the shapes change between steps.

## Why it is slow
With `benchmark = False` cuDNN picks a conv algorithm by heuristics. With `benchmark = True` it times the
available algorithms the first time it sees each shape and keeps the fastest for that shape, which is
often 10-30% faster per conv, sometimes much more. The search costs time once per new shape, so it pays when
the shapes repeat (fixed image size and batch) and hurts when they change every step.

## Example
```python
model = torchvision.models.resnet50().cuda()
for x, y in loader:                 # every batch 32×3×224×224
    loss = criterion(model(x), y)
```

## Use instead
```python
torch.backends.cudnn.benchmark = True   # before the first step
for x, y in loader:
    loss = criterion(model(x), y)
```
Leave it off (the default) for inputs whose shapes vary a lot; a last, smaller batch only triggers one more
search. With `torch.backends.cudnn.deterministic = True`, benchmark picks among deterministic algorithms only.

## Evidence
`cudnn_benchmark` in the environment convdoctor writes into the trace at capture (absent in foreign traces);
the input shapes of the outermost conv operators in each `ProfilerStep#N` (`Input Dims`), compared across
steps; the names of the conv kernels the layers launched (device events). The candidate (profile on CUDA
only) runs the model's forward with the flag on and is measured against the baseline; the backward of a
training step runs outside that forward, with the process's own setting.

## Options
`report_unknown` (bool, default true): for a trace that does not record the setting, report an info finding
saying the state is unknown, with the evidence above; false: say nothing.

## References
- https://pytorch.org/docs/stable/backends.html#torch.backends.cudnn.benchmark
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#enable-cudnn-auto-tuner
- https://docs.nvidia.com/deeplearning/cudnn/latest/developer/core-concepts.html
"""

    def decide(self, facts: BenchmarkFacts) -> Severity | None:
        """The severity of the finding these facts call for, or None for no finding."""
        if not facts.on_cuda or facts.recorded is True or not facts.fixed_shapes:
            return None
        if facts.recorded is None:
            return Severity.INFO if self.report_unknown else None
        return self.severity

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        facts = benchmark_facts(analysis)
        severity = self.decide(facts)
        if severity is None:
            return
        known = facts.recorded is not None
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=severity,
            fix="Set torch.backends.cudnn.benchmark = True",
            advice=("With fixed shapes, cuDNN's autotuner times its algorithms once per shape and keeps the "
                    "fastest." + ("" if known else " This trace was captured outside convdoctor, so whether the "
                                  "flag was on is unknown: check your training script, or profile the model with "
                                  "`convdoctor profile` to measure it.")),
            snippet=SNIPPET,
            layers=[layer.name for layer in analysis.layers],
            evidence=CudnnBenchmarkEvidence(
                cudnn_benchmark=facts.recorded if known else UNKNOWN,
                profiled_steps=facts.steps,
                fixed_shapes=facts.fixed_shapes,
                distinct_conv_input_shapes=facts.distinct_shapes,
                conv_kernels=facts.conv_kernels[:10],
            ),
            estimated_saving=None,  # the trace cannot show the other algorithms' times
            candidate=None if not known else Candidate(
                title="cudnn.benchmark = True around the forward",
                transform=backend_flags(cudnn_benchmark=True),
                numerics=NumericsContract.EXACT,
                tolerance=1e-3,  # another algorithm sums in another order
                stage=PlanStage.WRAPPER,
            ),
        )
