"""Kernel launch statistics: HTA's ``cuda_kernel_launch_stats``, aggregated per kernel name.

Each device event is paired with its runtime call by correlation id (launches, ``cudaMemcpyAsync`` and
``cudaMemsetAsync``, as HTA with ``include_memory_events``). Its launch delay is, as HTA's, the event's start less
the call's end, clipped at 0: the time the launched work waited in the queue after the host handed it over. A
launch-delay outlier has a delay above ``launch_delay_cutoff_us``, a runtime outlier a call longer than
``runtime_cutoff_us``, and a short kernel runs for less time than its launch call takes (the host cannot keep the
device busy with such kernels one launch at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

from convdoctor.analyzer.step.device_work import runtime_calls
from convdoctor.analyzer.trace.profile import Profile

RUNTIME_CUTOFF_US = 50.0  # HTA's default
LAUNCH_DELAY_CUTOFF_US = 100.0  # HTA's default
LAUNCH_CALLS = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cudaMemcpyAsync", "cudaMemsetAsync",
                          "cuLaunchKernel", "cuLaunchKernelEx", "hipLaunchKernel", "hipExtLaunchKernel",
                          "hipModuleLaunchKernel", "hipMemcpyAsync", "hipMemsetAsync"})
TOP_KERNELS = 20


@dataclass(frozen=True)
class KernelLaunches:
    """The launches of one kernel name."""

    name: str
    launches: int
    kernel_us: float  # summed duration of its device events
    launch_call_us: float  # summed duration of their runtime calls
    launch_delay_us: float  # summed launch delay
    max_launch_delay_us: float
    delay_outliers: int  # launches with a delay above the cutoff
    short: int  # launches whose kernel is shorter than its runtime call


@dataclass(frozen=True)
class LaunchStats:
    """Launch statistics of the trace: totals, and the kernels with the largest summed launch delay."""

    launches: int  # device events paired with a launch call
    unpaired: int  # device events without one in the trace
    kernel_us: float
    launch_call_us: float
    launch_delay_us: float
    short: int
    short_kernel_us: float  # summed duration of the short kernels
    delay_outliers: int
    runtime_outliers: int  # launch calls longer than the runtime cutoff
    kernels: list[KernelLaunches]  # the TOP_KERNELS with the largest summed launch delay
    kernels_left_out: int  # kernel names beyond them
    runtime_cutoff_us: float
    launch_delay_cutoff_us: float


def launch_stats(profile: Profile, runtime_cutoff_us: float = RUNTIME_CUTOFF_US,
                 launch_delay_cutoff_us: float = LAUNCH_DELAY_CUTOFF_US) -> LaunchStats | None:
    """Launch statistics; None when the trace has no device event paired with a launch call."""
    calls = {c: op for c, op in runtime_calls(profile).items() if op.name in LAUNCH_CALLS}
    rows: dict[str, list[float]] = {}
    unpaired = runtime_outliers = 0
    for kernel in profile.kernels:
        call = calls.get(kernel.correlation) if kernel.correlation is not None else None
        if call is None:
            unpaired += 1
            continue
        delay = max(0.0, kernel.ts_us - call.end_us)
        row = rows.setdefault(kernel.name, [0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0.0])
        row[0] += 1
        row[1] += kernel.dur_us
        row[2] += call.dur_us
        row[3] += delay
        row[4] = max(row[4], delay)
        row[5] += delay > launch_delay_cutoff_us
        short = kernel.dur_us < call.dur_us
        row[6] += short
        row[7] += kernel.dur_us if short else 0.0
        runtime_outliers += call.dur_us > runtime_cutoff_us
    if not rows:
        return None
    named = sorted(rows.items(), key=lambda item: item[1][3], reverse=True)
    kernels = [KernelLaunches(name, int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), int(r[6]))
               for name, r in named[:TOP_KERNELS]]
    return LaunchStats(
        launches=sum(int(r[0]) for r in rows.values()), unpaired=unpaired,
        kernel_us=sum(r[1] for r in rows.values()), launch_call_us=sum(r[2] for r in rows.values()),
        launch_delay_us=sum(r[3] for r in rows.values()), short=sum(int(r[6]) for r in rows.values()),
        short_kernel_us=sum(r[7] for r in rows.values()), delay_outliers=sum(int(r[5]) for r in rows.values()),
        runtime_outliers=runtime_outliers, kernels=kernels, kernels_left_out=max(0, len(rows) - TOP_KERNELS),
        runtime_cutoff_us=runtime_cutoff_us, launch_delay_cutoff_us=launch_delay_cutoff_us)
