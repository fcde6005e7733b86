"""Time per step of each leaf module (a module that calls no other module) read from a trace's module scopes.

A leaf's forward time is the time of the operators its calls run; in training, its backward time is that of the
autograd nodes those operators recorded, matched by sequence number (PyTorch gives an operator and the backward
node it creates the same ``Sequence number``). Host time of the operators, or on a GPU trace the device time of
the kernels they launch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from convdoctor.analyzer.conv.layers import TimeBasis
from convdoctor.analyzer.trace.profile import EventKind, Op, Profile

BACKWARD_NODE_PREFIX = "autograd::engine::evaluate_function: "


@dataclass(frozen=True)
class ModuleTime:
    """One leaf module's calls and time per step."""

    name: str  # qualified module name
    class_name: str
    calls_per_step: float
    forward_us: float  # per step
    backward_us: float  # per step; 0 in eval

    @property
    def time_us(self) -> float:
        return self.forward_us + self.backward_us


def leaf_module_times(profile: Profile, basis: TimeBasis) -> dict[str, ModuleTime]:
    """The leaf modules of the trace's module scopes by qualified name, with their time per step."""
    calls: dict[str, list[Op]] = defaultdict(list)
    for op in profile.ops:
        if op.scope is not None and not any(child.scope is not None for child in op.descendants()):
            calls[op.scope.qualified_name].append(op)
    backward = _backward_nodes(profile)
    steps = profile.step_count
    times = {}
    for name, module_calls in calls.items():
        sequence_numbers = {op.sequence_number for call in module_calls for op in call.descendants()
                            if op.sequence_number is not None}
        nodes = [backward[number] for number in sequence_numbers if number in backward]
        times[name] = ModuleTime(
            name=name, class_name=module_calls[0].scope.class_name, calls_per_step=len(module_calls) / steps,
            forward_us=sum(_call_time_us(call, basis) for call in module_calls) / steps,
            backward_us=sum(_time_us(node, basis) for node in nodes) / steps)
    return times


def _backward_nodes(profile: Profile) -> dict[int, Op]:
    """The outermost autograd node event of each sequence number."""
    nodes: dict[int, Op] = {}
    cpu_op = EventKind.CPU_OP
    for op in profile.ops:
        if (op.kind is cpu_op and op.sequence_number is not None and op.name.startswith(BACKWARD_NODE_PREFIX)
                and op.sequence_number not in nodes):
            nodes[op.sequence_number] = op
    return nodes


def _call_time_us(call: Op, basis: TimeBasis) -> float:
    """The time of one module call: its operators' host time, or the device time of the kernels it launches."""
    if basis is TimeBasis.DEVICE:
        return call.device_time_us()
    return sum(op.dur_us for op in call.children if op.kind is EventKind.CPU_OP)


def _time_us(op: Op, basis: TimeBasis) -> float:
    return op.device_time_us() if basis is TimeBasis.DEVICE else op.dur_us
