"""A third-party convdoctor rule: all a plugin needs is an object with the Rule protocol and an entry point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity


@dataclass(frozen=True)
class ManyLayersEvidence:
    """A finding's evidence is a frozen dataclass: report.json shows its fields, ``message()`` is its one line."""

    conv_layers: int

    def message(self) -> str:
        return f"{self.conv_layers} conv layers"


class ManyLayersRule:
    """Counts the conv layers of a run (an example of the plugin interface, not advice)."""

    id = "CD900"
    name = "many-layers"
    summary = "Counts conv layers (a third-party example)"
    severity = Severity.INFO
    requires = frozenset({Requirement.CONV_LAYERS})
    doc = "## What it detects\nHow many conv layers the run has.\n"

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        yield Finding(rule_id=self.id, rule_name=self.name, severity=self.severity,
                      evidence=ManyLayersEvidence(conv_layers=len(analysis.layers)), fix="nothing to fix", advice="",
                      snippet="", layers=[layer.name for layer in analysis.layers])
