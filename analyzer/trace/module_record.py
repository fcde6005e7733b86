"""Each module's parameters and output size as capture records them in the trace's convdoctor metadata, keyed by
module scope name (``capture.recording`` reads them from the model; reading them back needs no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convdoctor.analyzer.trace.profile import Profile
from convdoctor.analyzer.trace.recorded import recorded_entries

MODULES_KEY = "modules"  # in it: {module scope name: [parameters, output bytes of its first call or null]}


@dataclass(frozen=True)
class ModuleRecord:
    """What the model tells of one module and a trace does not."""

    parameters: int  # sum(p.numel() for p in module.parameters()): its own and its submodules', shared ones once
    output_bytes: int | None  # bytes of the tensors its first call returned; None when it was not called


def recorded_modules(profile: Profile) -> dict[str, ModuleRecord]:
    """The module records a trace's convdoctor metadata holds, by qualified module name; entries of another form
    are left out. Empty for traces without them."""
    return {name: ModuleRecord(value[0], value[1]) for name, value in recorded_entries(profile, MODULES_KEY)
            if _count(value[0]) and (value[1] is None or _count(value[1]))}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
