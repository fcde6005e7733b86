"""Conv -> BatchNorm module pairs read from the module scopes of a Profile (shared by CD109 and CD113).

A pair is a ``Conv1d/2d/3d`` module whose every call is followed, under the same parent module call and with
nothing in between, by a call of one ``BatchNorm1d/2d/3d`` module, and the BN's input shape is the conv's
output shape. What each rule then asks of a pair (running statistics, a bias) it checks itself.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.analyzer.trace.profile import EventKind, Op

CONV_CLASS = re.compile(r"^Conv[123]d$")  # exactly torch.nn.ConvNd: a subclass may change what forward computes
BN_CLASS = re.compile(r"^BatchNorm[123]d$")
BN_OPS = ("aten::batch_norm", "aten::native_batch_norm", "aten::_native_batch_norm_legit_no_training",
          "aten::cudnn_batch_norm", "aten::miopen_batch_norm")


@dataclass(frozen=True)
class ModulePair:
    """A conv module whose every call feeds the BatchNorm module called right after it."""

    conv: str  # qualified module names
    bn: str
    shape: tuple[int, ...]  # the conv output, which is the BN input
    conv_calls: tuple[Op, ...]  # the module-call annotations, in trace order
    bn_calls: tuple[Op, ...]


@dataclass(frozen=True)
class Unpaired:
    """A BatchNorm that a conv feeds in some call, and why the two do not make a pair."""

    bn: str
    conv: str | None
    reason: str


def conv_bn_pairs(analysis: ConvAnalysis) -> tuple[list[ModulePair], list[Unpaired]]:
    """The (conv, BN) module pairs of the trace, and the BNs right after a conv that do not pair up, with why.

    Both lists follow the order of the BNs' first calls.
    """
    calls: dict[str, list[Op]] = defaultdict(list)
    for op in analysis.profile.scope_ops:
        if CONV_CLASS.match(op.scope.class_name) or BN_CLASS.match(op.scope.class_name):
            calls[op.scope.qualified_name].append(op)
    output_shapes = {layer.name: layer.output_shape for layer in analysis.layers}
    pairs: list[ModulePair] = []
    unpaired: list[Unpaired] = []
    for bn_name, bn_calls in calls.items():
        if not BN_CLASS.match(bn_calls[0].scope.class_name):
            continue
        before = {_conv_before(call) for call in bn_calls}
        conv_names = {name for name in before if name is not None}
        if not conv_names:
            continue  # no conv right before this BN in any call: nothing to say
        conv_name = sorted(conv_names)[0]
        conv_calls = calls.get(conv_name, [])
        reason = _why_not(conv_name, before, bn_name, bn_calls, conv_calls, output_shapes)
        if reason:
            unpaired.append(Unpaired(bn=bn_name, conv=conv_name, reason=reason))
            continue
        pairs.append(ModulePair(conv=conv_name, bn=bn_name, shape=tuple(bn_op(bn_calls[0]).input_dims[0]),
                                conv_calls=tuple(conv_calls), bn_calls=tuple(bn_calls)))
    return pairs, unpaired


def bn_op(bn_call: Op) -> Op | None:
    """The outermost batch-norm operator of a BatchNorm module call."""
    return next((op for op in bn_call.descendants() if op.kind is EventKind.CPU_OP and op.name in BN_OPS), None)


def _why_not(conv_name: str, before: set[str | None], bn_name: str, bn_calls: list[Op], conv_calls: list[Op],
             output_shapes: dict[str, list[int] | None]) -> str | None:
    """Why ``conv_name`` and ``bn_name`` are not a pair, or None when every check passes."""
    if len(before) > 1:
        named = sorted(name or "something else" for name in before)
        return f"its calls follow different things ({', '.join(named)}): one change cannot serve them all"
    bn_ids = {id(call) for call in bn_calls}
    if any(id(_next_sibling(call)) not in bn_ids for call in conv_calls):
        return f"{conv_name} is also called without {bn_name} right after it: its output is used unnormalized"
    expected = output_shapes.get(conv_name)
    for call in bn_calls:
        op = bn_op(call)
        if op is None or not op.input_dims or not op.input_dims[0]:
            return "the trace has no input shape for the BatchNorm op (capture with record_shapes=True)"
        if expected is None:
            return f"the output shape of {conv_name} is unknown, so the BN input cannot be matched to it"
        if list(op.input_dims[0]) != list(expected):
            return f"its input {list(op.input_dims[0])} is not the output {list(expected)} of {conv_name}"
    return None


def _conv_before(bn_call: Op) -> str | None:
    """The conv module called right before this BN call under the same parent scope, if that is what it is."""
    previous = _previous_sibling(bn_call)
    if previous is None or previous.scope is None or not CONV_CLASS.match(previous.scope.class_name):
        return None
    return previous.scope.qualified_name


def _previous_sibling(op: Op) -> Op | None:
    siblings = op.parent.children if op.parent is not None else []
    index = next((i for i, sibling in enumerate(siblings) if sibling is op), 0)
    return siblings[index - 1] if index > 0 else None


def _next_sibling(op: Op) -> Op | None:
    siblings = op.parent.children if op.parent is not None else []
    index = next((i for i, sibling in enumerate(siblings) if sibling is op), len(siblings))
    return siblings[index + 1] if index + 1 < len(siblings) else None
