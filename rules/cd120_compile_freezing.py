"""CD120 compile-freezing: an eager eval model whose convs inductor could compile with its weights frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import frozen_compiled
from convdoctor.analyzer.conv.layers import ConvAnalysis, is_conv_op
from convdoctor.rules.base import Finding, Requirement, Severity

COMPILED_REGION = "Torch-Compiled Region"
BATCH_NORM_OPS = frozenset({"aten::batch_norm", "aten::_batch_norm_impl_index", "aten::native_batch_norm",
                            "aten::_native_batch_norm_legit_no_training"})
# What inductor's freezing passes already do (torch/_inductor/fx_passes/freezing_patterns.py, binary folding).
COVERS = (("CD109", "inductor freezing folds each BatchNorm into the conv before it"),)
# On the CPU with oneDNN, inductor lays every convolution out in channels_last itself (layout_optimization, on by
# default: GraphLowering.decide_layout_opt in torch/_inductor/graph.py); on a GPU that is a heuristic, so there
# channels_last is measured on top. Here, channels_last on top of the frozen compile measured 1.29× against 1.40×
# without it on ResNet-18 (benchmarks/PROFILE_TIME.md).
CPU_COVERS = (("CD101", "on the CPU, inductor's layout_optimization lays every convolution out in channels_last"),)
TOLERANCE = 1e-3  # folding batch norms into the conv weights and fused epilogues change float32 rounding only

SNIPPET = """\
import torch._inductor.config as inductor_config

model = model.eval(){layout}
inductor_config.freezing = True      # or: with inductor_config.patch(freezing=True): around the first call
compiled = torch.compile(model)
with torch.no_grad():                # freezing applies to graphs compiled with grad disabled
    out = compiled(x)                # the first call compiles and folds the weights in"""
CPU_LAYOUT = "                 # on the CPU inductor makes the convs channels_last itself"
GPU_LAYOUT = ".to(memory_format=torch.channels_last)"


@dataclass(frozen=True)
class CompileFreezingEvidence:
    """An eval trace that ran eagerly, its conv time and the eager ops around the convs that freezing folds or fuses."""

    conv_layers: int
    conv_ms_per_step: float
    conv_share: float  # of the step
    batch_norms_per_step: float  # BatchNorm calls per step: freezing folds those that follow a conv
    eager_ops_per_step: float  # outermost non-conv operators per step (batch norm, activations, adds, pooling)
    eager_ms_per_step: float

    def message(self) -> str:
        return (f"eval runs eagerly: {self.conv_layers} conv layers take {self.conv_ms_per_step:.2f} ms "
                f"({self.conv_share:.0%} of the step), with {self.eager_ops_per_step:g} eager non-conv ops per step "
                f"({self.eager_ms_per_step:.2f} ms), {self.batch_norms_per_step:g} of them batch norms")


class CompileFreezingRule:
    """An eager eval model with conv layers: torch.compile with inductor freezing folds and prepacks its weights."""

    id = "CD120"
    name = "compile-freezing"
    summary = "Eager eval model: torch.compile with inductor freezing folds batch norms and prepacks conv weights"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS})
    min_share = 0.1  # Options: smallest share of the step in conv layers for the finding
    doc = """\
## What it detects
An eval (inference) trace that ran eagerly — no `Torch-Compiled Region` in it — whose conv layers take at
least `min_share` of the step. It stays quiet in training, where parameters change every step and cannot be
frozen. Its candidate compiles the model with freezing (7-12 s for small_cnn or ResNet-18 on a 2-core CPU): once
for the numerics check, whose copy then serves every block (a fresh copy would compile again); each plan
combination with it compiles once more. `--ignore CD120` leaves it out of a run.

## Why it is slow
Eagerly, every BatchNorm after a conv is its own pass over the activation, every activation and residual add
another, and on a CPU each conv call hands oneDNN weights in plain layout. `torch.compile` fuses the elementwise
ops; with inductor's `freezing` the parameters become constants of the graph, so that it also folds each
BatchNorm into its conv's weights, folds constant casts (autocast's weight casts), and prepacks the conv weights
once in oneDNN's blocked layout. On an AVX512-BF16 CPU, compile + freezing + bfloat16 + channels_last measured
2.4-3.3x on eval CNNs at batch 8, where eager fixes stopped at 1.2-1.7x.

## Example
```python
model = torchvision.models.resnet18().eval()
with torch.no_grad():
    out = model(x)  # conv, batch_norm, relu, add: one eager call each
```

## Use instead
```python
import torch._inductor.config as inductor_config
inductor_config.freezing = True
compiled = torch.compile(model.eval())
with torch.no_grad():
    out = compiled(x)  # the first call compiles, with the weights frozen in
```
Frozen weights are read when the model compiles: load the weights first, and recompile after changing them.
Compilation time is paid on the first call (the candidate reports it as its first step) and again for new input
shapes. In the plan it wraps everything else (PlanStage.COMPILER): autocast and channels_last run inside the
compiled graph, which on torch 2.13 lets freezing fold the weight casts. On the CPU, inductor lays every
convolution out in channels_last itself (`layout_optimization`, on by default with oneDNN), so a plan led by this
candidate leaves CD101 out unmeasured; on a GPU that choice is a heuristic, and channels_last is measured on top.

## Evidence
Conv layers and their time per step; the outermost non-conv operators in the profiled steps, their time, and how
many are batch norms; the absence of `Torch-Compiled Region` events, and of a model file that compiles the
model with freezing on; the run's mode (`eval`), as recorded.

## Options
`min_share` (fraction of step time, default 0.1): smallest share of the step spent in conv layers. The candidate's
tolerance is 1e-3 (float32 rounding of folded weights and fused epilogues). `mode="max-autotune"` is not tried:
on a CPU it autotunes inductor's GEMM templates (Linear and matmul), not the oneDNN convolutions, and its
benchmarking multiplies a compile that already dominates this rule's cost.

## References
- https://pytorch.org/docs/stable/torch.compiler.html
- https://github.com/pytorch/pytorch/blob/main/torch/_inductor/freezing.py
- https://pytorch.org/tutorials/intermediate/torch_compile_tutorial.html
- https://github.com/pytorch/pytorch/blob/main/torch/_inductor/config.py (`freezing`)
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        if analysis.mode != "eval":
            return  # training updates the parameters: nothing to freeze
        if any(op.name.startswith(COMPILED_REGION) for op in profile.ops):
            return
        if analysis.compiled is not None and analysis.compiled.by_model_file and analysis.compiled.freezing:
            return  # the model file compiles the model with freezing already
        share = analysis.share(analysis.conv_time_us)
        if share < self.min_share:
            return
        steps = profile.step_count
        on_device = analysis.time_basis.value == "device"
        eager = [op for op in profile.outermost_cpu_ops
                 if not is_conv_op(op.name) and not op.name.startswith("autograd::")
                 and (not profile.steps or profile.step_of(op.ts_us) is not None)]
        eager_us = sum(op.device_time_us() if on_device else op.dur_us for op in eager) / steps
        evidence = CompileFreezingEvidence(
            conv_layers=len(analysis.layers), conv_ms_per_step=analysis.conv_time_us / 1e3, conv_share=share,
            batch_norms_per_step=sum(op.name in BATCH_NORM_OPS for op in eager) / steps,
            eager_ops_per_step=len(eager) / steps, eager_ms_per_step=eager_us / 1e3)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            evidence=evidence,
            fix="Compile the eval model with torch.compile and inductor freezing",
            advice=("Set torch._inductor.config.freezing = True while the eval model compiles: inductor then treats "
                    "the weights as constants, folds each BatchNorm into its conv, folds constant casts and prepacks "
                    "the conv weights for oneDNN, on top of fusing the elementwise ops. "
                    + ("Combine it with channels_last. " if on_device else
                       "On the CPU inductor also lays the convolutions out in channels_last itself: converting the "
                       "model first adds nothing. On a CPU with native bfloat16, add bfloat16 autocast inside the "
                       "compiled model. ")
                    + "The first call compiles (the candidate's first step shows how long); weights changed after "
                      "compiling are not seen until it recompiles."),
            snippet=SNIPPET.format(layout=GPU_LAYOUT if on_device else CPU_LAYOUT),
            layers=[layer.name for layer in analysis.layers],
            estimated_saving=None,  # folding, prepacking and fusion: the trace cannot say how much they remove
            candidate=Candidate(title="torch.compile(model) with inductor freezing", transform=frozen_compiled,
                                numerics=NumericsContract.APPROXIMATE, tolerance=TOLERANCE,
                                stage=PlanStage.COMPILER,
                                covers=COVERS if on_device else COVERS + CPU_COVERS),
        )
