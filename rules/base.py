"""What a rule is and what it returns.

The Rule protocol (the one hook, documented the way pytest documents its hookspecs):

    id: str              stable code, ``^CD[0-9]{3}$``, never reused once retired
    name: str            short kebab-case name, e.g. ``channels-last``
    summary: str         one line
    doc: str             sections ``What it detects``, ``Why it is slow``, ``Example``, ``Use instead``,
                         ``Evidence``, ``Options``, ``References`` (``## Heading`` lines)
    severity: Severity   default severity of its findings
    requires: frozenset[Requirement]   what the profile must hold; the rule is skipped with a reason otherwise
    opt_in: bool         (optional, default False) runs only when selected by its id or name
    probes: frozenset[Probe]   (optional, default empty) timings of the live workload that `profile` takes at
                         capture and records in the trace for the rule's prediction; the rule works without them
    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]

A rule reads the ConvAnalysis (the Profile and its conv layers); it never parses JSON or runs the model.
Its Finding may carry a Candidate, which the pipeline applies to a copy of the workload and measures.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, runtime_checkable

# The candidate types belong to the rule API (a plugin's finding may carry one) and live with the transforms.
from convdoctor.analyzer.candidates.candidate import Candidate as Candidate
from convdoctor.analyzer.candidates.candidate import LargerBatches as LargerBatches
from convdoctor.analyzer.candidates.candidate import LayerTrial as LayerTrial
from convdoctor.analyzer.candidates.candidate import NumericsContract as NumericsContract
from convdoctor.analyzer.candidates.candidate import PlanStage as PlanStage
from convdoctor.analyzer.candidates.candidate import combine as combine
from convdoctor.analyzer.conv.layers import ConvAnalysis

DOC_SECTIONS = ("What it detects", "Why it is slow", "Example", "Use instead", "Evidence", "Options", "References")


class Severity(str, enum.Enum):
    """How much a finding is likely to matter."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class SavingBound(str, enum.Enum):
    """What a finding's estimated saving is: the trace shows some of what a fix does, rarely all of it."""

    ESTIMATE = "estimate"  # the time of the work the fix removes (a folded BatchNorm, a redundant bias)
    AT_MOST = "at most"  # an upper bound (time spent where the fix can at best make it vanish)
    PART = "part"  # only the part the trace shows (layout copies): the fix's main effect, faster kernels, is not


class Requirement(str, enum.Enum):
    """Facts a rule needs from the profile."""

    CONV_LAYERS = "conv layers"
    MODULE_SCOPES = "module scopes"
    DEVICE_KERNELS = "CUDA kernels"
    COMMUNICATION = "collective communication"  # a rank of a data-parallel job (DDP allreduce)
    RANKS = "other ranks' traces"  # every rank of the job, analyzed together (profile --nproc)


class Probe(str, enum.Enum):
    """Timings `profile` takes on the live workload at capture for a rule that asks (``Rule.probes``)."""

    LAYOUT = "layout"  # each leaf module in channels_last against its own layout (analyzer/layout_probe.py)


def wanted_probes(rules: Iterable[Rule]) -> frozenset[Probe]:
    """The probes any of these rules asks for."""
    return frozenset(probe for rule in rules for probe in getattr(rule, "probes", ()))


class Evidence(Protocol):
    """A finding's evidence: a frozen dataclass of its rule holding the trace facts the finding rests on (units in
    the field names); report.json shows its fields. ``message()`` renders the finding's one line from them, so the
    line never says what the evidence does not hold."""

    def message(self) -> str: ...


def evidence_fields(evidence: Evidence) -> dict[str, Any]:
    """The evidence as report.json shows it: ``dataclasses.asdict`` (nested dataclasses become dicts, tuples stay
    sequences), save that two field markers leave a field out, at any depth:

    - ``field(metadata={"serialize": False})``: a fact only ``message()`` needs, never in the report;
    - ``field(metadata={"omit_none": True})``: an optional part, left out while it is None.
    """
    return _fields(evidence)


def _fields(instance: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if f.metadata.get("serialize", True) and not (value is None and f.metadata.get("omit_none", False)):
            shown[f.name] = _value(value)
    return shown


def _value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, list):
        return [_value(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_value(item) for item in value)
    if isinstance(value, dict):
        return {key: _value(item) for key, item in value.items()}
    return value


@dataclass
class Finding:
    """One thing a rule found, with the evidence that shows it and the fix it proposes."""

    rule_id: str
    rule_name: str
    severity: Severity
    evidence: Evidence
    fix: str  # the title of the fix
    advice: str
    snippet: str
    layers: list[str] = field(default_factory=list)
    estimated_saving: float | None = None  # fraction of step time, when the trace bounds it
    saving_bound: SavingBound = SavingBound.ESTIMATE  # how to read estimated_saving
    candidate: Candidate | None = None
    larger_batches: LargerBatches | None = None

    @property
    def predicted_speedup(self) -> float | None:
        """The speedup the analysis predicts: ``1 / (1 - estimated_saving)``, the estimated share of the profiled
        step taken off the step (a share, so the profiler's own overhead in the trace does not scale it). None
        without an estimate, or when the estimate is the whole step."""
        saving = self.estimated_saving
        return 1.0 / (1.0 - saving) if saving is not None and saving < 1.0 else None

    @property
    def predicted_saving(self) -> float | None:
        """The estimated saving when it is a prediction of the fix's whole effect (an ESTIMATE, not a bound or a
        part): what a measurement can be held against."""
        return self.estimated_saving if self.saving_bound is SavingBound.ESTIMATE else None

    @property
    def message(self) -> str:
        """One line with measured numbers, rendered from the evidence."""
        return self.evidence.message()


@runtime_checkable
class Rule(Protocol):
    """A convdoctor rule; see the module docstring for the protocol."""

    id: str
    name: str
    summary: str
    doc: str
    severity: Severity
    requires: frozenset[Requirement]

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]: ...


def doc_sections(doc: str) -> list[tuple[str, str]]:
    """A rule doc as (heading, body) pairs, in order."""
    sections: list[tuple[str, str]] = []
    for block in re.split(r"^## ", doc, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        sections.append((heading.strip(), body.strip()))
    return sections


def missing_requirements(rule: Rule, analysis: ConvAnalysis) -> list[str]:
    """Why the analysis cannot feed this rule; empty when it can."""
    profile = analysis.profile
    present = {
        Requirement.CONV_LAYERS: bool(analysis.layers),
        Requirement.MODULE_SCOPES: profile.has_module_scopes,
        Requirement.DEVICE_KERNELS: profile.has_device_events,
        Requirement.COMMUNICATION: analysis.communication is not None,
        Requirement.RANKS: analysis.job is not None,
    }
    return [f"trace has no {req.value}" for req in sorted(rule.requires) if not present[req]]
