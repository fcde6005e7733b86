"""CD113 conv-bias-before-bn: a conv bias that feeds straight into a BatchNorm, which subtracts it again."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.conv.layers import CONV_OP, ConvAnalysis, TimeBasis
from convdoctor.analyzer.trace.profile import EventKind, Op
from convdoctor.rules.base import Finding, Requirement, Severity
from convdoctor.rules.shared.module_pairs import ModulePair, conv_bn_pairs

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    from convdoctor.analyzer.capture.workload import Workload

# Ops a conv runs for its bias outside the conv kernel itself: cuDNN/MIOpen add it after the conv (`add_`),
# the slow CPU path broadcasts it into the output first (`copy_`), and the backward reduces grad_output (`sum`).
FORWARD_BIAS_OPS = ("aten::add_", "aten::add", "aten::copy_")
BACKWARD_BIAS_OPS = ("aten::sum",)


@dataclass(frozen=True)
class BiasPair:
    """A conv -> BN pair whose conv has a bias, and what the trace shows that bias cost."""

    conv: str
    bn: str
    shape: tuple[int, ...]
    bias_params: int
    bias_us_per_step: float  # 0.0 when the trace shows no separate bias op (fused into the conv kernel)
    bias_ops: tuple[str, ...]


@dataclass(frozen=True)
class BiasPairRow:
    """A conv -> BN pair as the report shows it."""

    conv: str
    bn: str
    shape: list[int]  # of the conv's output
    bias_params: int
    bias_ms_per_step: float | None  # None when the trace shows no separate bias op
    bias_ops: list[str]


@dataclass(frozen=True)
class ConvBiasBeforeBnEvidence:
    """Conv biases that a BatchNorm subtracts again, and what the trace shows them cost."""

    mode: str
    pairs: list[BiasPairRow]  # the first named in the message
    pair_count: int
    bias_params: int
    bias_ops: list[str]
    bias_ms_per_step: float | None  # None when the trace shows no separate bias op (fused into the conv kernel)
    bias_share: float | None  # of step time, None as above

    def message(self) -> str:
        first, others = self.pairs[0], self.pair_count - 1
        more = f" and {others} more pair{'s' if others > 1 else ''}" if others else ""
        cost = (f"the bias ops cost {self.bias_ms_per_step:.3f} ms per step ({self.bias_share:.1%} of the step)"
                if self.bias_ms_per_step is not None and self.bias_share is not None
                else "the trace shows no separate bias op (fused into the conv kernel), so the saving is not bounded")
        return (f"{first.conv} -> {first.bn}{more}: {self.bias_params} conv bias parameters go straight into "
                f"BatchNorm, which subtracts them again; {cost}")


def drop_bias_into_bn(pairs: list[tuple[str, str]]) -> Callable[[Workload], Workload]:
    """A transform that removes each conv's bias and moves it into the BN's running mean (``running_mean -= b``).

    A BN normalizes its input with a per-channel mean: in training the batch mean, which shifts with the
    bias; in eval the running mean, which is shifted here by the bias. Either way the outputs stay the same.
    A pair whose conv has no bias or whose BN was already replaced (e.g. folded by CD109) is left alone.
    """

    def transform(workload: Workload) -> Workload:
        import torch

        from convdoctor.analyzer.candidates.torch_parts import BN_CLASSES, CONV_CLASSES

        model = workload.model
        with torch.no_grad():
            for conv_name, bn_name in pairs:
                conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
                if type(conv) not in CONV_CLASSES or type(bn) not in BN_CLASSES or conv.bias is None:
                    continue
                if bn.running_mean is not None:
                    bn.running_mean.sub_(conv.bias.to(bn.running_mean.dtype))
                conv.bias = None
        return replace(workload, model=model)

    return transform


def find_bias_pairs(analysis: ConvAnalysis) -> list[BiasPair]:
    """The conv -> BN pairs of the trace whose conv has a bias, with the time of the bias ops the trace shows."""
    layers = {layer.name: layer for layer in analysis.layers}
    backward = _backward_nodes(analysis)
    steps = analysis.profile.step_count
    found: list[BiasPair] = []
    module_pairs, _ = conv_bn_pairs(analysis)
    for pair in module_pairs:
        layer = layers.get(pair.conv)
        if layer is None or layer.bias_numel == 0:
            continue
        ops = _bias_ops(pair, backward)
        found.append(BiasPair(
            conv=pair.conv, bn=pair.bn, shape=pair.shape, bias_params=layer.bias_numel,
            bias_us_per_step=sum(_time_us(op, analysis.time_basis) for op in ops) / steps,
            bias_ops=tuple(sorted({op.name for op in ops}))))
    found.sort(key=lambda p: (p.bias_us_per_step, p.bias_params), reverse=True)
    return found


def _backward_nodes(analysis: ConvAnalysis) -> dict[int, list[Op]]:
    """Conv backward nodes by the sequence number they share with their forward op."""
    nodes: dict[int, list[Op]] = {}
    for op in analysis.backward_nodes:
        if op.sequence_number is not None:
            nodes.setdefault(op.sequence_number, []).append(op)
    return nodes


def _bias_ops(pair: ModulePair, backward: dict[int, list[Op]]) -> list[Op]:
    """The ops of the conv's calls that apply its bias (forward) or reduce grad_output to its gradient (backward)."""
    channels = pair.shape[1] if len(pair.shape) > 1 else None
    found: list[Op] = []
    for call in pair.conv_calls:
        conv_op = next((op for op in call.descendants() if op.kind is EventKind.CPU_OP and CONV_OP.match(op.name)),
                       None)
        if conv_op is None:
            continue
        found.extend(_outermost(conv_op, lambda op: _applies_bias(op, pair.shape, channels)))
        for node in backward.get(conv_op.sequence_number, []) if conv_op.sequence_number is not None else []:
            found.extend(_outermost(node, lambda op: op.name in BACKWARD_BIAS_OPS and _first_dims(op) == pair.shape))
    return found


def _applies_bias(op: Op, shape: tuple[int, ...], channels: int | None) -> bool:
    """An add or copy into the conv output whose other operand has one value per channel: the bias."""
    if op.name not in FORWARD_BIAS_OPS or len(op.input_dims) < 2 or _first_dims(op) != shape:
        return False
    other = op.input_dims[1]
    return isinstance(other, list) and len(other) > 0 and math.prod(other) == channels


def _first_dims(op: Op) -> tuple[int, ...] | None:
    first = op.input_dims[0] if op.input_dims else None
    return tuple(first) if isinstance(first, list) and first else None


def _outermost(root: Op, matches: Callable[[Op], bool]) -> list[Op]:
    """The CPU ops under ``root`` that match, without those nested in a match (their time is already counted)."""
    found: list[Op] = []
    for child in root.children:
        if child.kind is EventKind.CPU_OP and matches(child):
            found.append(child)
        else:
            found.extend(_outermost(child, matches))
    return found


def _time_us(op: Op, basis: TimeBasis) -> float:
    return op.device_time_us() if basis is TimeBasis.DEVICE else op.dur_us


def _snippet(pairs: list[BiasPair]) -> str:
    shown = ", ".join(f'("{pair.conv}", "{pair.bn}")' for pair in pairs[:3])
    more = ", ..." if len(pairs) > 3 else ""
    return (
        "# new models: no bias on a conv that a BatchNorm follows\n"
        "nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))\n\n"
        "# a trained model: move each bias into the BN's running mean, then drop it\n"
        "with torch.no_grad():\n"
        f"    for conv_name, bn_name in [{shown}{more}]:\n"
        "        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)\n"
        "        bn.running_mean -= conv.bias\n"
        "        conv.bias = None"
    )


class ConvBiasBeforeBnRule:
    """A convolution with a bias whose output goes straight into a BatchNorm, which removes that bias again."""

    id = "CD113"
    name = "conv-bias-before-bn"
    summary = "A conv bias right before a BatchNorm is subtracted again by the BN: work and parameters for nothing"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS, Requirement.MODULE_SCOPES})
    warning_share = 0.02  # Options: share of step time in visible bias ops from which the finding is a warning

    doc = """\
## What it detects
A `Conv1d`/`Conv2d`/`Conv3d` module with a bias whose every call feeds the `BatchNorm1d`/`2d`/`3d` module
called right after it (the same pairing as CD109: consecutive module calls under one parent, every call of
each paired up, the BN's input shape equal to the conv's output shape), in training and in inference.

## Why it is slow
BatchNorm subtracts a per-channel mean from its input: the batch mean in training, the running mean in
eval. A per-channel constant added just before it is subtracted again, so the conv bias changes nothing
(its gradient is zero in training) while it costs an extra pass over the output where it is not fused into
the conv kernel (cuDNN adds it with a separate `add_`, the slow CPU path broadcasts it into the output
first), a reduction of grad_output for its gradient in every backward, and parameters and optimizer state.
oneDNN on CPU fuses the add, so there the cost is mostly the parameters and the backward.

## Example
```python
block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())  # bias=True by default
```

## Use instead
```python
block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
```
For a trained model, keep its outputs by moving the bias into the BN's running mean:
`bn.running_mean -= conv.bias; conv.bias = None` (under `torch.no_grad()`). Checkpoints saved afterwards
have no `conv.bias` key. In inference, folding the BN into the conv (CD109) absorbs the bias too.

## Evidence
The module scopes of the trace (class names and order of the conv and BN calls, the BN's input shape), the
conv layer's bias shape (third input of `aten::convolution`), and the ops the conv runs for its bias when
they are separate from the conv kernel: an `aten::add_` or `aten::copy_` into the conv output with one value
per channel, and in the backward an `aten::sum` of grad_output. Their time (host time, or device time of
their kernels on GPU) bounds the saving; when the bias is fused into the conv kernel the trace does not
bound it and no saving is estimated.

## Options
`warning_share` (fraction of step time, default 0.02): share of the step spent in the visible bias ops from
which the finding is a warning rather than info.

## References
- https://arxiv.org/abs/1502.03167 (Ioffe & Szegedy, Batch Normalization, section 3.2: the bias can be ignored)
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#disable-bias-for-convolutions-directly-followed-by-a-batch-norm
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        pairs = find_bias_pairs(analysis)
        if not pairs:
            return
        mode = analysis.mode
        bias_us = sum(pair.bias_us_per_step for pair in pairs)
        share = analysis.share(bias_us) if bias_us > 0 else None
        params = sum(pair.bias_params for pair in pairs)
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=Severity.WARNING if share is not None and share >= self.warning_share else self.severity,
            fix="Drop the bias of each conv a BatchNorm follows (bias=False), moving it into the BN's running mean",
            advice=f"In these {len(pairs)} pairs the BN subtracts a per-channel mean right after the conv adds a "
                   "per-channel bias, so the bias has no effect on the output and gets no gradient. Build these "
                   "convs with bias=False; for a trained model, subtract each bias from the BN's running_mean and "
                   "drop it, which keeps eval outputs identical (training ones are unchanged anyway). Checkpoints "
                   "saved afterwards have no bias for these convs: load older ones first, then apply the change."
                   + (" In inference, folding the BN into the conv (CD109) absorbs the bias as well." if mode == "eval"
                      else ""),
            snippet=_snippet(pairs),
            layers=[pair.conv for pair in pairs],
            evidence=ConvBiasBeforeBnEvidence(
                mode=mode,
                pairs=[_pair_row(pair) for pair in pairs],
                pair_count=len(pairs),
                bias_params=params,
                bias_ops=sorted({name for pair in pairs for name in pair.bias_ops}),
                bias_ms_per_step=bias_us / 1e3 if share is not None else None,
                bias_share=share,
            ),
            estimated_saving=analysis.saving_share(bias_us) if share is not None else None,
            candidate=Candidate(
                title=f"{len(pairs)} conv bias{'es' if len(pairs) != 1 else ''} moved into the BatchNorm after it",
                transform=drop_bias_into_bn([(pair.conv, pair.bn) for pair in pairs]),
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,
                stage=PlanStage.STRUCTURE,
            ),
        )


def _pair_row(pair: BiasPair) -> BiasPairRow:
    return BiasPairRow(conv=pair.conv, bn=pair.bn, shape=list(pair.shape), bias_params=pair.bias_params,
                       bias_ms_per_step=pair.bias_us_per_step / 1e3 if pair.bias_ops else None,
                       bias_ops=list(pair.bias_ops))
