"""CD109 conv-bn-fold: in inference, a BatchNorm right after a convolution can be folded into the conv's weights."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
from convdoctor.analyzer.candidates.surgery import replace_module
from convdoctor.analyzer.conv.layers import ConvAnalysis, TimeBasis
from convdoctor.analyzer.trace.profile import EventKind, Op
from convdoctor.rules.base import Finding, Requirement, Severity
from convdoctor.rules.shared.module_pairs import ModulePair, bn_op, conv_bn_pairs

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    from convdoctor.analyzer.capture.workload import Workload


@dataclass(frozen=True)
class FoldPair:
    """A conv module whose every call feeds the BatchNorm module called right after it."""

    conv: str  # qualified module names
    bn: str
    shape: tuple[int, ...]  # the conv output, which is the BN input
    calls_per_step: float
    bn_us_per_step: float


@dataclass(frozen=True)
class Skipped:
    """A BatchNorm that looked foldable at first sight, and why it is not folded."""

    bn: str
    conv: str | None
    reason: str


@dataclass(frozen=True)
class FoldRow:
    """A FoldPair as the evidence shows it."""

    conv: str
    bn: str
    shape: list[int]
    calls_per_step: float
    bn_ms_per_step: float


@dataclass(frozen=True)
class ConvBnFoldEvidence:
    """The foldable conv-BN pairs of an inference step, the BN time folding removes, and the BNs left alone."""

    mode: str  # always "eval": the rule runs on inference steps only
    pairs: list[FoldRow]
    pair_count: int
    bn_ms_per_step: float
    bn_share: float
    predicted_share: float  # over the step timed without the profiler, where the trace has it
    skipped: list[Skipped]

    def message(self) -> str:
        first, count = self.pairs[0], self.pair_count
        more = f" and {count - 1} more pair{'s' if count > 2 else ''}" if count > 1 else ""
        return (f"{first.conv} -> {first.bn}{more}: BN costs {self.bn_ms_per_step:.2f} ms per step "
                f"({self.bn_share:.1%} of the step) and can be folded into the convs")


def fold_conv_bn(pairs: list[tuple[str, str]]) -> Callable[[Workload], Workload]:
    """A transform that folds each (conv, bn) pair: the conv becomes the fused conv, the bn ``nn.Identity()``."""

    def transform(workload: Workload) -> Workload:
        from torch import nn
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        from convdoctor.analyzer.candidates.torch_parts import BN_CLASSES, CONV_CLASSES

        model = workload.model
        for conv_name, bn_name in pairs:
            conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
            if type(conv) not in CONV_CLASSES or type(bn) not in BN_CLASSES:
                raise TypeError(f"{conv_name} -> {bn_name} is {type(conv).__name__} -> {type(bn).__name__}, "
                                "not a ConvNd followed by a BatchNormNd")
            replace_module(model, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
            replace_module(model, bn_name, nn.Identity())
        return replace(workload, model=model)

    return transform


def find_pairs(analysis: ConvAnalysis) -> tuple[list[FoldPair], list[Skipped]]:
    """The (conv, BN) pairs that can be folded, and the BNs after a conv that cannot, with the reason."""
    module_pairs, unpaired = conv_bn_pairs(analysis)
    skipped = [Skipped(bn=u.bn, conv=u.conv, reason=u.reason) for u in unpaired]
    pairs: list[FoldPair] = []
    steps = analysis.profile.step_count
    for pair in module_pairs:
        reason = _why_not_foldable(pair)
        if reason:
            skipped.append(Skipped(bn=pair.bn, conv=pair.conv, reason=reason))
            continue
        pairs.append(FoldPair(
            conv=pair.conv, bn=pair.bn, shape=pair.shape, calls_per_step=len(pair.bn_calls) / steps,
            bn_us_per_step=sum(_bn_call_us(call, analysis.time_basis) for call in pair.bn_calls) / steps))
    pairs.sort(key=lambda pair: pair.bn_us_per_step, reverse=True)
    return pairs, skipped


def _why_not_foldable(pair: ModulePair) -> str | None:
    """Why the BN of a conv -> BN pair cannot be folded (it normalizes with batch statistics), or None."""
    for call in pair.bn_calls:
        op = bn_op(call)
        if op.name in ("aten::batch_norm", "aten::native_batch_norm"):
            if len(op.input_dims) > 4 and (not op.input_dims[3] or not op.input_dims[4]):
                return "it has no running statistics (track_running_stats=False): it normalizes with batch stats"
            if len(op.concrete_inputs) > 5 and op.concrete_inputs[5] == "True":
                return "it runs in training mode (batch statistics): set model.eval()"
    return None


def _bn_call_us(call: Op, basis: TimeBasis) -> float:
    """What folding removes of one BN call: on the host its operators' time, on a GPU the device time of the
    kernels it launches. Not the whole module call: under the profiler that holds the module-scope hooks and
    annotation (on small_cnn 1.80 ms per step against 1.19 ms of operators, and folding measured 1.03-1.21 ms)."""
    if basis is TimeBasis.DEVICE:
        return call.device_time_us()
    return sum(op.dur_us for op in call.children if op.kind is EventKind.CPU_OP)


def _snippet(pairs: list[FoldPair]) -> str:
    shown = ", ".join(f'["{pair.conv}", "{pair.bn}"]' for pair in pairs[:3])
    more = ", ..." if len(pairs) > 3 else ""
    first = pairs[0]
    return (
        "import torch\n"
        "from torch.nn.utils.fusion import fuse_conv_bn_eval\n\n"
        "model.eval()  # folding uses the running statistics: inference only\n"
        f"# every pair at once (the BN becomes nn.Identity):\n"
        f"torch.ao.quantization.fuse_modules(model, [{shown}{more}], inplace=True)\n"
        f"# or one pair by hand:\n"
        f'fused = fuse_conv_bn_eval(model.get_submodule("{first.conv}"), model.get_submodule("{first.bn}"))'
    )


class ConvBnFoldRule:
    """In inference, BatchNorm layers that directly follow a convolution and can be folded into its weights."""

    id = "CD109"
    name = "conv-bn-fold"
    summary = "In inference, BatchNorm right after a conv costs a pass over the activation that folding removes"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.MODULE_SCOPES})
    min_bn_share = 0.0  # Options: smallest share of step time in foldable BatchNorm layers that is reported
    warning_share = 0.05  # Options: share of step time in foldable BatchNorm layers from which it is a warning
    doc = """\
## What it detects
In an inference (eval) step, a `Conv1d`/`Conv2d`/`Conv3d` module immediately followed by a
`BatchNorm1d`/`BatchNorm2d`/`BatchNorm3d` module that normalizes its output with running statistics. A pair
is folded only when the trace shows all of: the BN's module call comes right after the conv's module call
under the same parent module, with nothing in between; every call of the BN follows a call of that conv, and
every call of that conv is followed by that BN (a module called several times per step must pair up on each
call); the BN's input shape equals the conv's output shape; the BN runs with running statistics, not in
training mode. Anything else is skipped and the reason is kept in the evidence. The trace cannot show whether
the conv's output is also read elsewhere (e.g. `bn(y) + y`); the measured candidate's numerics check catches
that case, since the model's outputs would change.

## Why it is slow
In eval mode a BatchNorm is a fixed per-channel affine map, `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
Run as its own layer it reads and writes the whole activation once more, and launches its own kernels, for
arithmetic that fits into the conv's weights and bias: `W' = W * gamma / sqrt(var + eps)`,
`b' = (b - mean) * gamma / sqrt(var + eps) + beta`. Folded, the BN's time goes away and the conv costs the same.
Training mode cannot fold: the BN normalizes with the statistics of each batch and learns gamma and beta.

## Example
```python
block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
block.eval()
with torch.no_grad():
    out = block(x)
```

## Use instead
```python
from torch.nn.utils.fusion import fuse_conv_bn_eval

block.eval()
block[0] = fuse_conv_bn_eval(block[0], block[1])
block[1] = nn.Identity()
# or for many pairs: torch.ao.quantization.fuse_modules(model.eval(), [["0", "1"], ...], inplace=True)
```
`torch.jit.freeze` and `torch.compile` with inductor's freezing also fold conv-BN pairs in inference. Keep
the unfolded model for training and fold the copy you deploy.

## Evidence
The module scopes of the trace: the order of module calls under each parent module, the class names of the
modules (`Conv2d`, `BatchNorm2d`), the input shape of `aten::batch_norm` against the conv layer's output
shape, its `training` argument (`Concrete Inputs`) and whether running mean and variance are passed; the
step's mode (recorded at capture, else whether the trace holds backward ops). When the model file returns a
compiled model, the compiled trace's per-layer view: a BN that Inductor fused into another call or folded away
(no call works for it) is skipped, since compile already removed its pass. The BN time per step is the
host time of the operators of its module calls (device time of its kernels on GPU); the predicted saving is
that over the step timed without the profiler at capture, where the trace records it.

## Options
`min_bn_share` (fraction of step time, default 0.0): smallest share of the step spent in foldable BatchNorm
layers for the finding to be reported.
`warning_share` (fraction of step time, default 0.05): share of the step in foldable BatchNorm layers from
which the finding is a warning rather than info.

## References
- https://pytorch.org/docs/stable/generated/torch.nn.utils.fusion.fuse_conv_bn_eval.html
- https://pytorch.org/tutorials/intermediate/fx_conv_bn_fuser.html
- https://pytorch.org/docs/stable/generated/torch.ao.quantization.fuse_modules.html
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        if analysis.mode != "eval":
            return
        pairs, skipped = find_pairs(analysis)
        compiled = analysis.compiled
        if compiled is not None and compiled.by_model_file:  # what the user runs: compile's own fusions count
            done = {pair.bn: compiled.handled(pair.bn) for pair in pairs}
            skipped += [Skipped(bn=pair.bn, conv=pair.conv, reason=f"the compiled model already has it {done[pair.bn]}")
                        for pair in pairs if done[pair.bn] is not None]
            pairs = [pair for pair in pairs if done[pair.bn] is None]
        if not pairs:
            return
        bn_us = sum(pair.bn_us_per_step for pair in pairs)
        share = analysis.share(bn_us)
        predicted = analysis.saving_share(bn_us)
        if share < self.min_bn_share:
            return
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= self.warning_share else Severity.INFO,
            fix="Fold each BatchNorm into the conv before it for inference",
            advice=f"These {len(pairs)} BatchNorm layers each normalize the output of the conv called right before "
                   "them with fixed running statistics: fold them into the conv's weights and bias (the BN "
                   "becomes nn.Identity) in the model you run for inference, not in the one you train."
                   + (f" {len(skipped)} BatchNorm layer(s) after a conv were left alone; the evidence says why."
                      if skipped else ""),
            snippet=_snippet(pairs),
            layers=[pair.conv for pair in pairs],
            evidence=ConvBnFoldEvidence(
                mode="eval",
                pairs=[_pair_row(pair) for pair in pairs],
                pair_count=len(pairs),
                bn_ms_per_step=bn_us / 1e3,
                bn_share=share,
                predicted_share=predicted,
                skipped=skipped,
            ),
            estimated_saving=predicted,
            candidate=Candidate(
                title=f"{len(pairs)} BatchNorm layer{'s' if len(pairs) != 1 else ''} folded into their convs",
                transform=fold_conv_bn([(pair.conv, pair.bn) for pair in pairs]),
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,
            ),
        )


def _pair_row(pair: FoldPair) -> FoldRow:
    return FoldRow(conv=pair.conv, bn=pair.bn, shape=list(pair.shape), calls_per_step=pair.calls_per_step,
                   bn_ms_per_step=pair.bn_us_per_step / 1e3)
