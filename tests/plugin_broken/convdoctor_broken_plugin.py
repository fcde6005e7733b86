"""A third-party convdoctor rule with a bug: it loads, then raises while its findings are read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity


@dataclass(frozen=True)
class HalfResult:
    """The one finding it yields before it raises."""

    def message(self) -> str:
        return "half a result"


class BrokenRule:
    """Yields one finding, then fails on the first layer (a plugin's bug, not advice)."""

    id = "CD950"
    name = "broken-plugin"
    summary = "Raises in check() (a third-party example of a bug)"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS})
    doc = "## What it detects\nNothing: it raises.\n"

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        yield Finding(rule_id=self.id, rule_name=self.name, severity=self.severity, evidence=HalfResult(),
                      fix="nothing to fix", advice="", snippet="")
        raise ValueError(f"no stride recorded for {analysis.layers[0].name}")
