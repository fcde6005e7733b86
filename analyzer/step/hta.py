"""The HTA-class views of a trace together, as report.json's ``hta`` section holds them."""

from __future__ import annotations

from dataclasses import dataclass

from convdoctor.analyzer.step.critical_path import CriticalPath, NoCriticalPath, critical_path
from convdoctor.analyzer.step.idle_time import IdleBreakdown, idle_time_breakdown
from convdoctor.analyzer.step.launches import LaunchStats, launch_stats
from convdoctor.analyzer.step.pageable_copies import PageableCopies, pageable_copies
from convdoctor.analyzer.step.queue_length import StreamQueue, queue_lengths
from convdoctor.analyzer.step.syncs import SyncView, synchronizations
from convdoctor.analyzer.trace.profile import EventKind, Profile


@dataclass(frozen=True)
class HtaViews:
    """Idle time, launches, queues, synchronizations, pageable copies and the critical path of a GPU trace."""

    idle: IdleBreakdown
    launches: LaunchStats | None  # None when no device event has its launch call in the trace
    queues: list[StreamQueue]
    syncs: SyncView
    pageable: PageableCopies
    critical_path: CriticalPath | NoCriticalPath


def hta_views(profile: Profile) -> HtaViews | None:
    """The views of a GPU trace (one with CUDA runtime calls); None for a CPU trace (the report says why)."""
    if not profile.kernels and not profile.ops_by_kind[EventKind.RUNTIME]:
        return None
    return HtaViews(idle=idle_time_breakdown(profile), launches=launch_stats(profile), queues=queue_lengths(profile),
                    syncs=synchronizations(profile), pageable=pageable_copies(profile),
                    critical_path=critical_path(profile))


NO_GPU = ("the trace has no CUDA runtime calls or device events (a CPU trace): no idle time, launches, queues or "
          "synchronizations")
