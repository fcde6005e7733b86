"""Reading back what capture records in a trace's convdoctor metadata (``METADATA_KEY``, ``Profile.recorded``): the
entries keyed by module scope name, such as each module's parameters (``module_record``) and the layout probe's
times (``probe_record``), and the check of a recorded positive number (the probe's, ``inductor_record``'s)."""

from __future__ import annotations

import math
from typing import Any, Iterator

from convdoctor.analyzer.trace.module_scope import parse_scope_name
from convdoctor.analyzer.trace.profile import Profile


def recorded_entries(profile: Profile, key: str) -> Iterator[tuple[str, list[Any]]]:
    """The entries under ``key`` whose name is a module scope name and whose value a list of two, as (qualified
    module name, value); none for traces without them. Checking the values is the caller's."""
    entries = profile.recorded.get(key)
    if not isinstance(entries, dict):
        return
    for name, value in entries.items():
        scope = parse_scope_name(name) if isinstance(name, str) else None
        if scope is not None and isinstance(value, list) and len(value) == 2:
            yield scope.qualified_name, value


def positive(value: Any) -> float | None:
    """A recorded number that must be positive and finite (a time, a load), as a float; None for anything else."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None
