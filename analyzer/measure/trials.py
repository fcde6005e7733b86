"""Trials: the baseline measured against candidates applied together, in this process (``LocalTrial``, block by
block), in pairs of worker processes (``ProcessTrial``, for process settings) or as a whole data-parallel job
(``JobTrial``), each within its time limit."""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from typing import Iterator, Protocol

import torch

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, combine
from convdoctor.analyzer.capture.contention import QuietPolicy
from convdoctor.analyzer.capture.launch import JobSpec, run_job
from convdoctor.analyzer.capture.workload import Workload, describe_exception, time_limit
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Comparison, Measurement
from convdoctor.analyzer.measure.environment_trial import WorkerError, measure_environment
from convdoctor.analyzer.measure.job_tasks import MeasureTask
from convdoctor.analyzer.measure.model_cost import ArchitectureDelta, model_cost
from convdoctor.errors import JobError
from convdoctor.progress import Progress


class Trial(Protocol):
    """Measures the baseline against candidates applied together: in this process, or as a whole job."""

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        ...


TimeLimit = tuple[float | None, str]  # seconds (None: no limit), and which option set them
CANDIDATE_TIMEOUT_ADVICE = "it was stopped and the run went on; raise --timeout or --time-budget to let it finish"


class LocalTrial:
    """Baseline against candidate in this process (``benchmark.measure``), stopped when its time limit passes."""

    def __init__(self, workload: Workload, settings: BenchmarkSettings, progress: Progress,
                 quiet: QuietPolicy | None = None) -> None:
        self.workload, self.settings, self.progress, self.quiet = workload, settings, progress, quiet

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        pending = self.start(candidates, limit)
        while pending.comparison.blocks_left:
            pending.run_block()
        return pending.result()

    def start(self, candidates: list[Candidate], limit: TimeLimit) -> PendingTrial:
        """The candidates applied together, their outputs compared and the first block of rounds timed."""
        candidate = candidates[0] if len(candidates) == 1 else combine(candidates)
        pending = PendingTrial(self.workload, candidate, limit)
        with pending.limit():
            trial = candidate.transform(self.workload.copy())
            pending.comparison = Comparison(self.workload, trial, self.settings, self.progress.rounds, self.quiet)
            pending.comparison.run_block()
        return pending


class PendingTrial:
    """A candidate's in-process trial between its blocks of rounds: what is left of its time limit goes with it."""

    comparison: Comparison

    def __init__(self, workload: Workload, candidate: Candidate, limit: TimeLimit) -> None:
        self.workload, self.candidate = workload, candidate
        self.seconds_left, limit_name = limit
        self.what = (f"this trial ({limit_name})" if self.seconds_left is None
                     else f"this trial ({limit_name}: {self.seconds_left:g} s in all)")

    @contextlib.contextmanager
    def limit(self) -> Iterator[None]:
        """The trial's time limit, less what its earlier blocks took; the device's cache emptied when it fails."""
        started = time.perf_counter()
        try:
            with time_limit(self.seconds_left, self.what, advice=CANDIDATE_TIMEOUT_ADVICE):
                yield
        except Exception:
            if self.workload.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        finally:
            if self.seconds_left is not None:
                self.seconds_left = max(self.seconds_left - (time.perf_counter() - started), 1e-3)

    def run_block(self) -> None:
        with self.limit():
            self.comparison.run_block()

    def result(self) -> tuple[Measurement, ArchitectureDelta | None]:
        measurement = self.comparison.measurement()
        if self.candidate.numerics is NumericsContract.ARCHITECTURE:
            return measurement, ArchitectureDelta(before=model_cost(self.workload),
                                                  after=model_cost(self.comparison.candidate))
        return measurement, None


class ProcessTrial:
    """Baseline against a process setting (``Candidate.process_environment``): worker processes started from
    the model file, with and without it (a fresh pair per block), timed in alternating steps
    (``environment_trial.measure_environment``)."""

    def __init__(self, workload: Workload | None, settings: BenchmarkSettings, progress: Progress,
                 quiet: QuietPolicy | None = None) -> None:
        self.workload, self.settings, self.progress, self.quiet = workload, settings, progress, quiet

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        (candidate,) = candidates  # process settings are never combined: the plan runs in one process
        assert candidate.process_environment is not None
        if self.workload is None:
            raise CannotMeasure("process settings are not measured under --nproc")
        if not os.path.isfile(self.workload.source):
            raise CannotMeasure("process settings are measured on a model file (convdoctor profile MODEL_PY): "
                                "each variant starts its own process")
        seconds, limit_name = limit
        with time_limit(seconds, f"this trial ({limit_name})", advice=CANDIDATE_TIMEOUT_ADVICE):
            return measure_environment(self.workload, candidate.process_environment, self.settings,
                                       self.progress.rounds, self.quiet), None


class JobTrial:
    """Baseline against candidates as a whole data-parallel job: one launch per trial (``job_tasks.measure_job``)."""

    def __init__(self, spec: JobSpec, settings: BenchmarkSettings) -> None:
        self.spec, self.settings = spec, settings

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        """``limit`` is not applied: a job trial runs a fixed warm-up and number of rounds."""
        try:
            pickle.dumps(candidates)
        except Exception as exc:  # closures and local classes do not pickle
            raise CannotMeasure("not measured under --nproc: its transform cannot be sent to the job's workers "
                              "(it does not pickle); profile without --nproc to measure it") from exc
        return run_job(self.spec, MeasureTask(tuple(candidates), self.settings))[0]


class CannotMeasure(Exception):
    """A candidate that a trial cannot measure, and why, in one line (a transform that does not pickle for a
    job's workers; a process setting without a model file for its worker processes)."""


def failure(exc: Exception) -> str:
    """A failed trial in one line: a job's error line is already one."""
    return str(exc) if isinstance(exc, (JobError, CannotMeasure, WorkerError)) else describe_exception(exc)
