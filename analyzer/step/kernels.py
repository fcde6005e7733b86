"""torch-tb-profiler's Kernel view: every GPU kernel by name over the whole trace: calls, total, mean, min and max
duration, mean blocks per SM and estimated occupancy (weighted by duration, as tb-profiler does), tensor-core use
read from the name (``conv.kernels.uses_tensor_cores``), and the operator that launched it (correlation id, runtime
call, the CPU operator around it: ``Kernel.launcher``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from convdoctor.analyzer.conv.kernels import uses_tensor_cores
from convdoctor.analyzer.trace.profile import EventKind, Kernel, Profile


@dataclass(frozen=True)
class KernelRow:
    name: str
    calls: int
    total_us: float
    mean_us: float
    min_us: float
    max_us: float
    blocks_per_sm: float | None  # duration-weighted mean; None where no call has it
    occupancy_pct: float | None  # duration-weighted mean of Kineto's estimate; None where no call has it
    tensor_cores: bool | None  # None where the name tells neither
    launcher: str | None  # the operator with most of its time; None where no call links to one
    launchers: int  # distinct operators that launched it


@dataclass(frozen=True)
class Kernels:
    rows: tuple[KernelRow, ...]  # by total time, largest first
    total_us: float  # all kernels' time
    steps: int  # the steps the trace holds: the times are sums over the whole trace


def kernels(profile: Profile) -> Kernels | None:
    """None when the trace has no kernel records."""
    groups: dict[str, list[Kernel]] = defaultdict(list)
    for kernel in profile.kernels:
        if kernel.kind is EventKind.KERNEL:
            groups[kernel.name].append(kernel)
    if not groups:
        return None
    rows = sorted((_row(name, calls) for name, calls in groups.items()), key=lambda r: (-r.total_us, r.name))
    return Kernels(tuple(rows), sum(r.total_us for r in rows), profile.step_count)


def _row(name: str, calls: list[Kernel]) -> KernelRow:
    durations = [k.dur_us for k in calls]
    total = sum(durations)
    by_launcher: dict[str, float] = defaultdict(float)
    for k in calls:
        if k.launcher is not None:
            by_launcher[k.launcher.name] += k.dur_us
    return KernelRow(
        name=name, calls=len(calls), total_us=total, mean_us=total / len(calls), min_us=min(durations),
        max_us=max(durations), blocks_per_sm=_weighted(calls, "blocks_per_sm"),
        occupancy_pct=_weighted(calls, "est_occupancy_pct"), tensor_cores=uses_tensor_cores(name),
        launcher=max(by_launcher, key=lambda n: (by_launcher[n], n)) if by_launcher else None,
        launchers=len(by_launcher))


def _weighted(calls: list[Kernel], field: str) -> float | None:
    pairs = [(getattr(k, field), k.dur_us) for k in calls if getattr(k, field) is not None]
    weight = sum(d for _, d in pairs)
    if not pairs:
        return None
    return sum(v * d for v, d in pairs) / weight if weight else sum(v for v, _ in pairs) / len(pairs)
