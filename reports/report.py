"""The Report: everything the HTML, JSON and terminal reports show, filled by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from convdoctor.analyzer.benchmark import Measurement
from convdoctor.analyzer.layers import ConvAnalysis
from convdoctor.rules.base import Finding


@dataclass(frozen=True)
class WorkloadSummary:
    """What was profiled, where and how."""

    model_file: str
    device: str
    device_name: str
    mode: str
    batch_size: int | None
    dtype: str
    steps: int
    torch_version: str
    threads: int


@dataclass
class FindingOutcome:
    """A finding with what happened when its candidate was tried."""

    finding: Finding
    measurement: Measurement | None = None
    not_measured: str | None = None  # why there is no measurement (off, no candidate, the candidate failed)
    numerics_ok: bool | None = None  # the candidate's output error within its declared tolerance


@dataclass
class Report:
    """One run's result, as the reports read it."""

    tool_version: str
    workload: WorkloadSummary
    analysis: ConvAnalysis
    outcomes: list[FindingOutcome]
    trace_files: list[str]
    logdir: str
    skipped_rules: dict[str, str] = field(default_factory=dict)
    rule_problems: list[str] = field(default_factory=list)
