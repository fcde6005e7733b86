"""Capturing a data-parallel job: every rank profiles the same steps and writes its traces (``rank<k>`` workers)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from convdoctor.analyzer.capture.launch import JobSpec, run_job
from convdoctor.analyzer.capture.recording import capture, check_fits
from convdoctor.analyzer.capture.workload import Workload


def rank_worker_name(rank: int) -> str:
    """The worker name of a rank's traces (TensorBoard's worker, the start of the trace file's name)."""
    return f"rank{rank}"


@dataclass(frozen=True)
class CaptureTask:
    """Check that the inputs fit, then profile ``steps`` steps; each rank writes under ``<logdir>/rank<k>/<run>``."""

    logdir: str
    run_name: str
    steps: int

    def run(self, workload: Workload, rank: int) -> list[str]:
        check_fits(workload)
        traces = capture(workload, Path(self.logdir) / rank_worker_name(rank), self.run_name, steps=self.steps,
                         worker_name=rank_worker_name(rank))
        return [str(t) for t in traces]


def capture_job(spec: JobSpec, logdir: Path, run_name: str, steps: int) -> list[Path]:
    """Every rank's traces in ``logdir/run_name``, rank order; a failed job leaves the previous traces as they were."""
    logdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".job-", dir=logdir))
    try:
        per_rank = run_job(spec, CaptureTask(str(scratch), run_name, steps))
        target = logdir / run_name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        traces = []
        for written in per_rank:
            for trace in map(Path, written):
                traces.append(trace.rename(target / trace.name))
        return traces
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
