"""The layout probe as a trace records it: each leaf module's time per call in its own layout and in channels_last,
in the trace's convdoctor metadata, keyed by module scope name (``measure.layout_probe`` takes the timings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from convdoctor.analyzer.trace.module_scope import scope_name
from convdoctor.analyzer.trace.profile import Profile
from convdoctor.analyzer.trace.recorded import positive, recorded_entries


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
    return {name: LeafLayoutTime(*times) for name, value in recorded_entries(profile, LAYOUT_PROBE_KEY)
            if None not in (times := [positive(v) for v in value])}
