"""torch-tb-profiler's Operator view: every PyTorch operator (``cpu_op`` event) by name, and by name and input
shapes, over the whole trace: calls, host self and total time, device self and total time.

Host self time is the operator's duration less that of the events nested directly in it on its thread; device self
time is the GPU work (kernels, memcpy, memset) its own runtime calls launched, device total that of it and every
event nested in it. ``ProfilerStep#N`` marks are not operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from convdoctor.analyzer.trace.profile import EventKind, Op, Profile

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
    named: dict[str, list[float]] = {}
    shaped: dict[tuple[str, str], list[float]] = {}
    has_shapes = False
    device_total = _device_totals(profile.ops)
    for op in profile.ops:
        if op.kind is not EventKind.CPU_OP or op.name.startswith("ProfilerStep#"):
            continue
        figures = [1, op.dur_us - sum(child.dur_us for child in op.children), op.dur_us,
                   sum(k.dur_us for k in op.kernels), device_total[op]]
        shapes = str(op.input_dims)
        has_shapes = has_shapes or bool(op.input_dims)
        for table, key in ((named, op.name), (shaped, (op.name, shapes))):
            row = table.get(key)  # type: ignore[call-overload]
            if row is None:
                table[key] = list(figures)  # type: ignore[index]
            else:
                for i, value in enumerate(figures):
                    row[i] += value
    return Operators(
        by_name=_rows((name, None, *v) for name, v in named.items()),
        by_shape=_rows((name, shapes, *v) for (name, shapes), v in shaped.items()),
        has_shapes=has_shapes, steps=profile.step_count)


def _device_totals(ops: list[Op]) -> dict[Op, float]:
    """Each event's device total (``Op.device_time_us``), children first: one pass instead of a walk per operator.
    ``ops`` is sorted by start, longest first, so an event comes after the one it is nested in."""
    totals: dict[Op, float] = {}
    for op in reversed(ops):
        total = sum(k.dur_us for k in op.kernels) if op.kernels else 0.0
        for child in op.children:
            total += totals[child]
        totals[op] = total
    return totals


def _rows(items: Iterable[tuple[Any, ...]]) -> tuple[OperatorRow, ...]:
    rows = [OperatorRow(name, shapes, int(calls), *times) for name, shapes, calls, *times in items]
    return tuple(sorted(rows, key=lambda r: (-r.host_total_us, r.name)))
