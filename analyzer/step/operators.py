"""torch-tb-profiler's Operator view: every PyTorch operator (``cpu_op`` event) by name, and by name and input
shapes, over the whole trace: calls, host self and total time, device self and total time.

Host self time is the operator's duration less that of the events nested directly in it on its thread; device self
time is the GPU work (kernels, memcpy, memset) its own runtime calls launched, device total that of it and every
event nested in it. ``ProfilerStep#N`` marks are not operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import msgspec
import numpy as np

from convdoctor.analyzer.step.columns import column, looked_up
from convdoctor.analyzer.trace.profile import EventKind, Op, Profile

_encode = msgspec.json.Encoder().encode
_duration = attrgetter("dur_us")

DEFINITIONS = ("Sums over the whole trace. host self: the operator's duration less its directly nested events on its "
               "thread; device self: the GPU work its own runtime calls launched; device total: with that of every "
               "event nested in it.")


@dataclass(frozen=True)
class OperatorRow:
    name: str
    input_shapes: str | None  # the input dims as the trace writes them; None in the by-name table
    calls: int
    host_self_us: float
    host_total_us: float
    device_self_us: float
    device_total_us: float


@dataclass(frozen=True)
class Operators:
    by_name: tuple[OperatorRow, ...]  # by host total time, largest first
    by_shape: tuple[OperatorRow, ...]  # by host total time, largest first
    has_shapes: bool  # False when the trace recorded no input shapes (record_shapes off)
    steps: int  # the steps the trace holds: the times are sums over the whole trace


def operators(profile: Profile) -> Operators:
    """The Operator view of the whole trace (see the module docstring)."""
    ops = [op for op in profile.ops_by_kind[EventKind.CPU_OP] if not op.name.startswith("ProfilerStep#")]
    launched = _launched(profile)
    totals = _device_totals(profile, launched)
    host_self = np.fromiter((op.dur_us - sum(map(_duration, op.children)) for op in ops), dtype=float, count=len(ops))
    # Per operator, in trace order: each table's sums add them in this order.
    figures = (host_self, column(ops, "dur_us"), looked_up(launched, ops), looked_up(totals, ops))
    named: dict[str, int] = {}  # each table's rows, numbered in the order they first appear
    shaped: dict[bytes, int] = {}  # keyed by [name, input dims] as JSON: 4x faster to make than the dims' str
    by_name = np.array([named.setdefault(op.name, len(named)) for op in ops], dtype=np.intp)
    by_shape = np.array([shaped.setdefault(_encode((op.name, op.input_dims)), len(shaped)) for op in ops],
                        dtype=np.intp)
    begins = np.flatnonzero(np.diff(np.maximum.accumulate(by_shape), prepend=-1))  # where each shape row first shows
    firsts = [ops[i] for i in begins.tolist()]
    return Operators(
        by_name=_rows(list(named), [None] * len(named), by_name, figures),
        by_shape=_rows([op.name for op in firsts], [str(op.input_dims) for op in firsts], by_shape, figures),
        has_shapes=any(op.input_dims for op in ops), steps=profile.step_count)


def _launched(profile: Profile) -> dict[Op, float]:
    """The device time each event launched: its ``kernels``' durations, added in their order."""
    launched: dict[Op, float] = {}
    for kernel in profile.kernels:
        launcher = kernel.launcher
        if launcher is not None:
            launched[launcher] = launched.get(launcher, 0.0) + kernel.dur_us
    return launched


def _device_totals(profile: Profile, launched: dict[Op, float]) -> dict[Op, float]:
    """The device total (``Op.device_time_us``) of each event with device work in it: the time it launched, then
    each nested event's total added in turn. Found children first, over those events only."""
    holding: dict[Op, list[Op]] = {}  # the events with device work in them: their children that have some, in order
    for op in [op for op in profile.ops if op in launched]:  # trace order: children are met in order
        node, child = op, None
        while node is not None:
            nested = holding.get(node)
            known = nested is not None
            if nested is None:
                holding[node] = nested = []
            if child is not None:
                nested.append(child)
            if known:
                break
            node, child = node.parent, node
    totals: dict[Op, float] = {}
    for op in [op for op in reversed(profile.ops) if op in holding]:  # longest first among equal starts: children
        total = launched.get(op)  # come before the event around them
        for child in holding[op]:
            total = totals[child] if total is None else total + totals[child]
        totals[op] = total  # type: ignore[assignment]
    return totals


def _rows(names: list[str], shapes: list[str | None], rows: np.ndarray, figures: tuple[np.ndarray, ...]
          ) -> tuple[OperatorRow, ...]:
    """Each row's calls and sums (``np.bincount`` adds in the operators' order, as a loop would), by host total
    time, largest first."""
    calls = np.bincount(rows, minlength=len(names)).tolist()
    sums = [np.bincount(rows, weights=values, minlength=len(names)).tolist() for values in figures]
    table = [OperatorRow(name, shape, count, *times)
             for name, shape, count, *times in zip(names, shapes, calls, *sums)]
    return tuple(sorted(table, key=lambda r: (-r.host_total_us, r.name)))
