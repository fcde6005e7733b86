"""The critical path of each profiled step, a simpler version of HTA's ``critical_path_analysis``.

HTA builds a graph of every CPU op, launch, kernel and synchronization and takes its longest path. This walks the
same dependencies backwards from the step's end, one at a time, and so finds one dependent chain that ends at the
step's end:

- on the host thread that marks the step, the host ran its own work back to the last synchronization that returned
  before; if the device ran an event that ended inside that synchronization, the host waited on the device: the
  path goes to the last such event (the time between its end and the call's return is *waiting*);
- a device event started when both its launch call had returned and the previous event on its stream had ended:
  the path goes to whichever came later (the stream's previous event, or the launch call on its host thread, the
  gap being *waiting*: queueing or launch delay);
- a launch call's thread is followed back the same way; the walk ends at the step's start.

The step's span is so split exactly into host time, device time and waiting on the path (``unattributed_us`` where
a device event's launch call is not in the trace). Unlike HTA, host work on other threads is never on the path
except through a launch, and memory/event dependencies between streams are not followed (only synchronizations).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from convdoctor.analyzer.step.columns import spans
from convdoctor.analyzer.step.device_work import by_stream
from convdoctor.analyzer.step.syncs import SYNC_CALLS
from convdoctor.analyzer.trace.profile import EventKind, Kernel, Op, Profile

TOP_KERNELS = 10
Thread = tuple[str, str]


@dataclass(frozen=True)
class PathKernel:
    """A kernel name on the critical path, with its time on it."""

    name: str
    us_per_step: float


@dataclass(frozen=True)
class CriticalPath:
    """The critical path's split, per step (mean over the steps), and the kernels longest on it."""

    steps: int
    path_us: float  # the step's span
    host_us: float
    device_us: float
    waiting_us: float
    unattributed_us: float
    syncs_on_path: float  # per step
    kernels: list[PathKernel]  # the TOP_KERNELS longest on the path


@dataclass(frozen=True)
class NoCriticalPath:
    """Why the trace gives no critical path."""

    reason: str


def critical_path(profile: Profile) -> CriticalPath | NoCriticalPath:
    """The critical path of each step, averaged (see the module docstring)."""
    if not profile.kernels:
        return NoCriticalPath("the trace has no device events (kernels, memcpys, memsets)")
    calls = profile.runtime_calls
    if not any(k.correlation in calls for k in profile.kernels):
        return NoCriticalPath("no device event's launch call is in the trace (no correlation ids)")
    walk = _Walk(profile, calls)
    spans = profile.step_spans
    for _, start, end in spans:
        walk.step(start, end)
    n = len(spans)
    named = sorted(walk.kernel_us.items(), key=lambda item: item[1], reverse=True)[:TOP_KERNELS]
    return CriticalPath(steps=n, path_us=walk.total["path"] / n, host_us=walk.total["host"] / n,
                        device_us=walk.total["device"] / n, waiting_us=walk.total["waiting"] / n,
                        unattributed_us=walk.total["unattributed"] / n, syncs_on_path=walk.syncs / n,
                        kernels=[PathKernel(name, us / n) for name, us in named])


class _Walk:
    """The dependencies the walk follows, indexed once for all steps."""

    def __init__(self, profile: Profile, calls: dict[int, Op]) -> None:
        self.calls = calls
        self.main = _main_thread(profile)
        syncs: dict[Thread, list[Op]] = defaultdict(list)
        for op in profile.ops_by_kind[EventKind.RUNTIME]:
            if op.name in SYNC_CALLS:
                syncs[(op.pid, op.tid)].append(op)
        self.syncs_by_thread = {t: sorted(ops, key=lambda o: o.end_us) for t, ops in syncs.items()}
        self.sync_ends = {t: [o.end_us for o in ops] for t, ops in self.syncs_by_thread.items()}
        self.previous: dict[int, Kernel | None] = {}  # id(kernel) -> the event before it on its stream
        for events in by_stream(profile).values():
            for before, event in zip([None, *events], events):
                self.previous[id(event)] = before
        ends = spans(profile.kernels)[1]
        order = np.argsort(ends, kind="stable")
        self.by_end = [profile.kernels[i] for i in order.tolist()]
        self.ends = ends[order].tolist()
        self.total: dict[str, float] = defaultdict(float)
        self.kernel_us: dict[str, float] = defaultdict(float)
        self.syncs = 0

    def step(self, start: float, end: float) -> None:
        """Walk one step back from its end, adding its split to the totals."""
        self.total["path"] += end - start
        thread: Thread = self.main
        kernel: Kernel | None = None
        t = end
        for _ in range(4 * len(self.by_end) + 4 * len(self.calls) + 8):  # each move goes back: a bound, not a loop
            if kernel is None:
                sync = self._last_sync(thread, t, start)
                if sync is None:
                    self.total["host"] += t - start
                    return
                self.total["host"] += t - sync.end_us
                waited = self._waited_for(sync, start)
                if waited is None:  # the call returned at once: host time
                    self.total["host"] += sync.end_us - max(sync.ts_us, start)
                    t = max(sync.ts_us, start)
                    continue
                self.syncs += 1
                self.total["waiting"] += sync.end_us - waited.end_us
                kernel, t = waited, waited.end_us
                continue
            if kernel.ts_us <= start:
                self.total["device"] += t - start
                self.kernel_us[kernel.name] += t - start
                return
            self.total["device"] += t - kernel.ts_us
            self.kernel_us[kernel.name] += t - kernel.ts_us
            before = self.previous.get(id(kernel))
            call = self.calls.get(kernel.correlation) if kernel.correlation is not None else None
            if before is not None and before.end_us > start and (call is None or before.end_us >= call.end_us):
                t_next = min(before.end_us, kernel.ts_us)
                self.total["waiting"] += kernel.ts_us - t_next
                kernel, t = before, t_next
            elif call is not None:
                t_next = max(start, min(call.end_us, kernel.ts_us))
                self.total["waiting"] += kernel.ts_us - t_next
                kernel, thread, t = None, (call.pid, call.tid), t_next
            else:
                self.total["unattributed"] += kernel.ts_us - start
                return
        self.total["unattributed"] += t - start

    def _last_sync(self, thread: Thread, t: float, start: float) -> Op | None:
        """The last synchronization on the thread that returned before ``t`` and after ``start``."""
        ends = self.sync_ends.get(thread)
        if not ends:
            return None
        i = bisect.bisect_left(ends, t) - 1
        return self.syncs_by_thread[thread][i] if i >= 0 and ends[i] > start else None

    def _waited_for(self, sync: Op, start: float) -> Kernel | None:
        """The last device event that ended while the synchronization blocked, None when none did."""
        i = bisect.bisect_right(self.ends, sync.end_us) - 1
        if i < 0:
            return None
        kernel = self.by_end[i]
        return kernel if kernel.end_us > max(sync.ts_us, start) else None


def _main_thread(profile: Profile) -> Thread:
    """The thread that marks the steps; else the one with the most CPU operators."""
    counts: dict[Thread, int] = defaultdict(int)
    for op in profile.ops:
        if op.name.startswith("ProfilerStep#"):
            return (op.pid, op.tid)
        if op.kind is EventKind.CPU_OP:
            counts[(op.pid, op.tid)] += 1
    return max(counts, key=lambda t: counts[t]) if counts else ("", "")
