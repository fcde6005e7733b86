"""The nn.Module tree of a step, read from the trace's module scopes: each module's forward and backward time,
FLOPs, parameters and output size.

A module's forward time is that of the outermost operators its calls run (host time), or of the kernels they launch
(device time on a GPU trace); its backward time is that of the autograd nodes those operators recorded, matched by
sequence number as ``conv.module_time`` does. A submodule's operators are its parent's too, so times nest.
Parameters and output sizes come from the model (``trace.module_record``), recorded by ``convdoctor profile``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from convdoctor.analyzer.conv.layers import ConvAnalysis, TimeBasis, call_flops
from convdoctor.analyzer.conv.module_time import BACKWARD_NODE_PREFIX
from convdoctor.analyzer.trace.module_record import recorded_modules
from convdoctor.analyzer.trace.profile import EventKind, Op, Profile

MATMUL_OPS = {"aten::mm": (0, 1), "aten::addmm": (1, 2), "aten::bmm": (0, 1), "aten::baddbmm": (1, 2)}  # operands
MAX_SHOWN = 200  # modules the HTML tree shows, breadth first
MAX_DEPTH = 8  # levels the HTML tree shows
FLOPS_COUNTED = ("forward FLOPs of convolutions and matrix products (aten::mm, addmm, bmm, baddbmm) from the "
                 "trace's input shapes; other operators (normalization, activations, pooling...) are not counted")


@dataclass(frozen=True)
class ModuleNode:
    """One module of the tree, over all its calls in the profiled steps (figures per step unless said)."""

    name: str  # qualified name (convdoctor's scopes) or PyTorch's instance name ("Conv2d_3")
    class_name: str
    depth: int  # 0 for a root
    calls_per_step: float
    forward_us: float
    backward_us: float | None  # None when the trace cannot attribute backward time (ModulesView.notes)
    flops: int | None  # FLOPS_COUNTED per step; None when one of those operators has no shapes
    parameters: int | None  # its own and its submodules'; None when not recorded
    output_bytes: int | None  # of its first call's output tensors; None when not recorded
    children: tuple[ModuleNode, ...]
    hidden: int = 0  # submodules under it left out of ModulesView.shown


@dataclass(frozen=True)
class ModulesView:
    """The module tree, and the part of it the HTML shows (at most MAX_SHOWN modules, MAX_DEPTH levels)."""

    time_basis: TimeBasis
    roots: tuple[ModuleNode, ...]
    module_count: int
    shown: tuple[ModuleNode, ...]  # roots, cut: each cut node counts its submodules left out in ``hidden``
    shown_count: int
    notes: tuple[str, ...]  # what the trace cannot tell
    flops_counted: str = FLOPS_COUNTED


def module_view(analysis: ConvAnalysis) -> ModulesView:
    """The module tree of the analysis's trace; without module scopes, an empty tree and a note that says so."""
    profile, basis = analysis.profile, analysis.time_basis
    if not profile.has_module_scopes:
        return ModulesView(basis, (), 0, (), 0, ("the trace has no module scopes (neither convdoctor's nor PyTorch's "
                                                 "'nn.Module: ' events): profile with `convdoctor profile`, or "
                                                 "with_stack=True and with_modules=True",))
    calls: dict[str, list[Op]] = {}
    parent_of: dict[str, str | None] = {}
    for op in profile.scope_ops:
        name = op.scope.qualified_name
        calls.setdefault(name, []).append(op)
        if name not in parent_of:
            parent_of[name] = op.module_call.scope.qualified_name if op.module_call is not None else None
    nodes, notes = _figures(analysis, calls), []
    backward = _backward_nodes(profile)
    if backward is None:
        notes.append("backward time unknown: the trace's autograd nodes carry no 'Sequence number' (PyTorch 1.8 "
                     "and before), which links them to the forward operators")
    elif not backward:
        notes.append("the trace has no backward pass (eval): backward time is 0")
    if any(node.flops is None for node in nodes.values()):
        notes.append("FLOPs unknown for modules whose convolutions or matrix products have no input shapes "
                     "(recorded without record_shapes=True)")
    records = recorded_modules(profile)
    if not records:
        notes.append("parameters and output sizes unknown: they are read from the model by `convdoctor profile`; "
                     "this trace does not hold them")
    steps = profile.step_count
    children: dict[str | None, list[str]] = {}
    for name in calls:  # in order of first call
        parent = parent_of[name]
        children.setdefault(parent if parent in calls and parent != name else None, []).append(name)

    def build(name: str, depth: int) -> ModuleNode:
        figures, record = nodes[name], records.get(name)
        back = None if backward is None else sum(_time_us(backward[n], basis) for n in figures.sequence_numbers
                                                 if n in backward) / steps
        return ModuleNode(
            name=name, class_name=calls[name][0].scope.class_name, depth=depth,
            calls_per_step=len(calls[name]) / steps, forward_us=figures.forward_us / steps, backward_us=back,
            flops=None if figures.flops is None else round(figures.flops / steps),
            parameters=record.parameters if record else None, output_bytes=record.output_bytes if record else None,
            children=tuple(build(child, depth + 1) for child in children.get(name, [])))

    roots = tuple(build(name, 0) for name in children.get(None, []))
    shown, count = _cut(roots)
    return ModulesView(basis, roots, len(calls), shown, count, tuple(notes))


@dataclass(frozen=True)
class _Calls:
    """A module's calls summed over the profiled steps."""

    forward_us: float
    flops: int | None
    sequence_numbers: frozenset[int]  # of the CPU operators its calls ran


def _figures(analysis: ConvAnalysis, calls: dict[str, list[Op]]) -> dict[str, _Calls]:
    """Each module's summed forward time, FLOPs (None when not known) and the sequence numbers of its operators."""
    conv_calls = {id(op): call_flops(op) for op in analysis.calls}  # each conv call's FLOPs, by event
    figures = {}
    for name, module_calls in calls.items():
        forward_us, flops, sequence = 0.0, 0, set()
        for call in module_calls:
            forward_us += call.device_time_us() if analysis.time_basis is TimeBasis.DEVICE else _host_us(call)
            sequence.update(op.sequence_number for op in call.descendants()
                            if op.sequence_number is not None and op.kind is EventKind.CPU_OP)
            counted = _flops(call, conv_calls)
            flops = None if flops is None or counted is None else flops + counted
        figures[name] = _Calls(forward_us, flops, frozenset(sequence))
    return figures


def _host_us(call: Op) -> float:
    """Host time of the outermost CPU operators under a module call."""
    total, stack = 0.0, list(call.children)
    while stack:
        op = stack.pop()
        if op.kind is EventKind.CPU_OP:
            total += op.dur_us
        else:
            stack.extend(op.children)
    return total


def _flops(call: Op, conv_calls: dict[int, int | None]) -> int | None:
    """FLOPS_COUNTED of one module call; None when one of its counted operators has no shapes."""
    total, stack = 0, list(call.children)
    while stack:
        op = stack.pop()
        if id(op) in conv_calls:
            flops = conv_calls[id(op)]
        elif op.name in MATMUL_OPS:
            flops = _matmul_flops(op)
        else:
            stack.extend(op.children)
            continue
        if flops is None:
            return None
        total += flops
    return total


def _matmul_flops(op: Op) -> int | None:
    """2·(batch)·M·K·N of a matrix product, from its operands' shapes; None without them."""
    first, second = MATMUL_OPS[op.name]
    dims = op.input_dims
    a = dims[first] if first < len(dims) else []
    b = dims[second] if second < len(dims) else []
    if len(a) not in (2, 3) or len(a) != len(b) or not all(isinstance(d, int) for d in (*a, *b)):
        return None
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


def _backward_nodes(profile: Profile) -> dict[int, Op] | None:
    """The outermost autograd node event of each sequence number; None when the trace has autograd nodes but none
    carries a sequence number (backward time cannot be attributed)."""
    nodes: dict[int, Op] = {}
    unnumbered = False
    for op in profile.ops:
        if op.kind is EventKind.CPU_OP and op.name.startswith(BACKWARD_NODE_PREFIX):
            if op.sequence_number is None:
                unnumbered = True
            elif op.sequence_number not in nodes:
                nodes[op.sequence_number] = op
    return None if unnumbered and not nodes else nodes


def _time_us(op: Op, basis: TimeBasis) -> float:
    return op.device_time_us() if basis is TimeBasis.DEVICE else op.dur_us


def _cut(roots: tuple[ModuleNode, ...]) -> tuple[tuple[ModuleNode, ...], int]:
    """The tree cut to MAX_SHOWN modules taken breadth first and MAX_DEPTH levels; how many modules it keeps."""
    kept: set[int] = set()
    queue = deque(roots)
    while queue and len(kept) < MAX_SHOWN:
        node = queue.popleft()
        if node.depth < MAX_DEPTH:
            kept.add(id(node))
            queue.extend(node.children)

    def cut(node: ModuleNode) -> ModuleNode:
        children = tuple(cut(child) for child in node.children if id(child) in kept)
        hidden = _size(node) - 1 - sum(_size(child) for child in node.children if id(child) in kept)
        return replace(node, children=children, hidden=hidden)

    def _size(node: ModuleNode) -> int:
        return 1 + sum(_size(child) for child in node.children)

    return tuple(cut(root) for root in roots if id(root) in kept), len(kept)
