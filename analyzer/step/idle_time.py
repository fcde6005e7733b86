"""Idle time between device events on each stream, by cause: HTA's ``get_idle_time_breakdown``.

For each device event (kernel, memcpy or memset) on a stream, the gap since the previous one on that stream is idle
time, and is:

- host wait: the event's runtime call started after the previous event ended (the host was not enqueuing fast
  enough);
- kernel wait: otherwise, when the gap is shorter than ``consecutive_kernel_delay_us`` (launch latency between
  back-to-back kernels);
- other: otherwise (the event was queued in time but started late: a wait on another stream or an event).

As HTA, over the whole trace (gaps between profiled steps included), each stream apart. Where the launching call is
not in the trace, HTA's join leaves its time empty and the gap is never a host wait; here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import nan

import numpy as np

from convdoctor.analyzer.step.columns import spans
from convdoctor.analyzer.step.device_work import by_stream
from convdoctor.analyzer.trace.profile import Profile

# HTA's default, 30 (its docstring says ns; its timestamps are µs, so 30 µs in effect).
CONSECUTIVE_KERNEL_DELAY_US = 30.0


@dataclass(frozen=True)
class StreamIdle:
    """The idle time of one stream, split by cause."""

    device: int | None
    stream: int | None
    events: int  # device events on the stream
    host_wait_us: float
    kernel_wait_us: float
    other_us: float

    @property
    def idle_us(self) -> float:
        return self.host_wait_us + self.kernel_wait_us + self.other_us


@dataclass(frozen=True)
class IdleBreakdown:
    """Idle time per stream; ``consecutive_kernel_delay_us`` is the kernel-wait threshold it used."""

    streams: list[StreamIdle]
    consecutive_kernel_delay_us: float


def idle_time_breakdown(profile: Profile,
                        consecutive_kernel_delay_us: float = CONSECUTIVE_KERNEL_DELAY_US) -> IdleBreakdown:
    """Each stream's idle time by cause (see the module docstring)."""
    calls = profile.runtime_calls
    rows = []
    for (device, stream), events in by_stream(profile).items():
        starts, ends = spans(events)
        gap = starts[1:] - ends[:-1]  # before each event but the first
        launches = [calls.get(e.correlation) for e in events[1:]]  # type: ignore[arg-type]
        enqueued = np.array([nan if call is None else call.ts_us for call in launches], dtype=float)
        host = enqueued > ends[:-1]  # the call started after the event before ended (never where it is missing)
        kernel = ~host & (gap < consecutive_kernel_delay_us)
        host_us, kernel_us, other_us = (sum(gap[part].tolist()) for part in (host, kernel, ~host & ~kernel))
        rows.append(StreamIdle(device, stream, len(events), float(host_us), float(kernel_us), float(other_us)))
    return IdleBreakdown(rows, consecutive_kernel_delay_us)
