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

import numpy as np

from convdoctor.analyzer.step.columns import column, spans
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
    calls = profile.runtime_calls
    kernels, launches = [], []
    for kernel in profile.kernels:
        call = calls.get(kernel.correlation)  # type: ignore[arg-type]
        if call is not None and call.name in LAUNCH_CALLS:
            kernels.append(kernel)
            launches.append(call)
    if not kernels:
        return None
    names: dict[str, int] = {}  # each kernel name's row, in the order they first appear
    row = np.array([names.setdefault(k.name, len(names)) for k in kernels], dtype=np.intp)
    kernel_us, call_us = column(kernels, "dur_us"), column(launches, "dur_us")
    delay = column(kernels, "ts_us") - spans(launches)[1]
    delay = np.where(delay > 0.0, delay, 0.0)
    short, outlier = kernel_us < call_us, delay > launch_delay_cutoff_us

    def summed(values: np.ndarray) -> list[float]:  # per row, added in the events' order as a loop adds them
        return np.bincount(row, weights=values, minlength=len(names)).tolist()

    count, kernel_sum, call_sum, delay_sum = (summed(v) for v in (np.ones(len(kernels)), kernel_us, call_us, delay))
    outliers, shorts, short_sum = summed(outlier), summed(short), summed(np.where(short, kernel_us, 0.0))
    most = np.zeros(len(names))
    np.maximum.at(most, row, delay)
    longest, labels = most.tolist(), list(names)
    ranked = sorted(range(len(names)), key=delay_sum.__getitem__, reverse=True)
    return LaunchStats(
        launches=len(kernels), unpaired=len(profile.kernels) - len(kernels), kernel_us=sum(kernel_sum),
        launch_call_us=sum(call_sum), launch_delay_us=sum(delay_sum), short=int(short.sum()),
        short_kernel_us=sum(short_sum), delay_outliers=int(outlier.sum()),
        runtime_outliers=int((call_us > runtime_cutoff_us).sum()),
        kernels=[KernelLaunches(labels[i], int(count[i]), kernel_sum[i], call_sum[i], delay_sum[i], longest[i],
                                int(outliers[i]), int(shorts[i])) for i in ranked[:TOP_KERNELS]],
        kernels_left_out=max(0, len(names) - TOP_KERNELS), runtime_cutoff_us=runtime_cutoff_us,
        launch_delay_cutoff_us=launch_delay_cutoff_us)
