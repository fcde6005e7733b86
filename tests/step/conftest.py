"""One real train-mode capture of tests/models/step_views.py (one profiled step, memory recorded), analyzed once
and reported once for the Modules and Memory tests."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import MODELS

STEP_VIEWS = MODELS / "step_views.py"


@dataclass(frozen=True)
class StepViewsRun:
    trace: Path
    events: list[dict[str, Any]]  # the trace's raw JSON events
    report: Any  # the Report of the trace, analyzed as `convdoctor analyze` does


def raw_events(trace: Path) -> list[dict[str, Any]]:
    """The events of a trace file as plain JSON (object or array form, gzip or not)."""
    opener = gzip.open if trace.name.endswith(".gz") else open
    with opener(trace, "rt", encoding="utf-8") as file:
        data = json.load(file)
    return data["traceEvents"] if isinstance(data, dict) else data


@pytest.fixture(scope="session")
def step_views_run(tmp_path_factory: pytest.TempPathFactory) -> StepViewsRun:
    from convdoctor.analyzer.capture.recording import capture
    from convdoctor.analyzer.capture.workload import load_workload
    from convdoctor.pipeline import analyze_trace

    workload = load_workload(STEP_VIEWS, device="cpu", mode="train")
    (trace,) = capture(workload, tmp_path_factory.mktemp("step_views") / "tb", "run", steps=1)
    return StepViewsRun(trace, raw_events(trace), analyze_trace(trace))
