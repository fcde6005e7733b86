"""Host-to-device copies from pageable memory, inside the profiled steps.

Kineto names a copy's source and destination (``Memcpy HtoD (Pageable -> Device)``). A copy from pageable memory
is staged by the driver through a pinned buffer: the launching call returns only once the data is staged, so the
copy cannot overlap host work, and ``non_blocking=True`` does nothing for it. The time at stake is the copies'
device time plus the host time of their launch calls (which block for the staging).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from convdoctor.analyzer.trace.profile import EventKind, Profile

PAGEABLE_HTOD = re.compile(r"HtoD.*Pageable|Pageable.*HtoD", re.IGNORECASE)


@dataclass(frozen=True)
class PageableCopies:
    """The pageable host-to-device copies inside the profiled steps."""

    steps: int
    copies: int
    copy_us: float  # summed device time of the copies
    call_us: float  # summed host time of their launch calls (0 where a call is not in the trace)
    calls_found: int  # copies whose launch call is in the trace
    operators: list[str]  # the CPU operators that issued them, most copies first


def pageable_copies(profile: Profile) -> PageableCopies:
    """The pageable host-to-device copies that start inside the profiled steps."""
    spans = profile.step_spans
    memcpy = EventKind.MEMCPY
    copies = [k for k in profile.kernels if k.kind is memcpy and PAGEABLE_HTOD.search(k.name)
              and any(start <= k.ts_us < end for _, start, end in spans)]
    calls = profile.runtime_calls if copies else {}
    found = [calls[k.correlation] for k in copies if k.correlation in calls]
    issuers: dict[str, int] = {}
    for k in copies:
        if k.launcher is not None:
            issuers[k.launcher.name] = issuers.get(k.launcher.name, 0) + 1
    return PageableCopies(steps=len(spans), copies=len(copies), copy_us=sum(k.dur_us for k in copies),
                          call_us=sum(c.dur_us for c in found), calls_found=len(found),
                          operators=sorted(issuers, key=lambda name: -issuers[name]))
