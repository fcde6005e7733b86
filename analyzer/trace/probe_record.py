"""The layout probe as a trace records it: each leaf module's time per call in its own layout and in channels_last,
in the trace's convdoctor metadata, keyed by module scope name (``measure.layout_probe`` takes the timings)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from convdoctor.analyzer.trace.module_scope import parse_scope_name, scope_name
from convdoctor.analyzer.trace.profile import METADATA_KEY, Profile


class NamedModules(Protocol):
    """A model as ``recordable`` reads it (an ``nn.Module``; typed here so that reading traces needs no torch)."""

    def named_modules(self) -> Iterable[tuple[str, Any]]: ...


LAYOUT_PROBE_KEY = "layout_probe"  # in it: {module scope name: [current_us, channels_last_us]}


@dataclass(frozen=True)
class LeafLayoutTime:
    """One leaf module timed alone per call: in the layout it runs in, and in channels_last."""

    current_us: float
    channels_last_us: float

    @property
    def ratio(self) -> float:
        """Channels-last time over current time: below 1, channels_last is faster."""
        return self.channels_last_us / self.current_us


def recordable(probe: dict[str, LeafLayoutTime], model: NamedModules) -> dict[str, list[float]]:
    """The probe as the trace metadata keeps it: keyed by module scope name (escaped as annotations are)."""
    class_names = {name: type(module).__name__ for name, module in model.named_modules()}
    return {scope_name(name, class_names[name]): [round(t.current_us, 3), round(t.channels_last_us, 3)]
            for name, t in probe.items()}


def recorded_probe(profile: Profile) -> dict[str, LeafLayoutTime]:
    """The probe a trace's convdoctor metadata holds (``recordable``'s form), by qualified module name; entries
    that are not two positive finite times are left out. Empty for traces without one."""
    convdoctor = profile.metadata.get(METADATA_KEY)
    entries = convdoctor.get(LAYOUT_PROBE_KEY) if isinstance(convdoctor, dict) else None
    if not isinstance(entries, dict):
        return {}
    probe = {}
    for key, value in entries.items():
        scope = parse_scope_name(key) if isinstance(key, str) else None
        if scope is None or not isinstance(value, list) or len(value) != 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value):
            probe[scope.qualified_name] = LeafLayoutTime(float(value[0]), float(value[1]))
    return probe
