"""Trials: the baseline measured against candidates applied together, in this process (``LocalTrial``, as arms of
a comparison that several candidates may share), in pairs of worker processes (``ProcessTrial``, for process
settings) or as a whole data-parallel job (``JobTrial``), each within its time limit."""

from __future__ import annotations

import os
import pickle
from typing import Protocol

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, combine
from convdoctor.analyzer.capture.contention import QuietPolicy
from convdoctor.analyzer.capture.launch import JobSpec, run_job
from convdoctor.analyzer.capture.workload import Workload, describe_exception, time_limit
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Measurement
from convdoctor.analyzer.measure.comparison import CANDIDATE_TIMEOUT_ADVICE, Arm, Comparison, TimeLimit
from convdoctor.analyzer.measure.environment_trial import WorkerError, measure_environment
from convdoctor.analyzer.measure.job_tasks import MeasureTask
from convdoctor.analyzer.measure.model_cost import ArchitectureDelta, model_cost
from convdoctor.errors import JobError
from convdoctor.progress import Progress


class Trial(Protocol):
    """Measures the baseline against candidates applied together: in this process, or as a whole job."""

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        ...


class LocalTrial:
    """Baseline against candidates in this process (``comparison.Comparison``), each within its time limit."""

    def __init__(self, workload: Workload, settings: BenchmarkSettings, progress: Progress,
                 quiet: QuietPolicy | None = None) -> None:
        self.workload, self.settings, self.progress, self.quiet = workload, settings, progress, quiet

    def __call__(self, candidates: list[Candidate], limit: TimeLimit) -> tuple[Measurement, ArchitectureDelta | None]:
        comparison = self.comparison()
        arm = self.add(comparison, candidates, limit)
        while comparison.blocks_left:
            comparison.run_block()
        return arm.result()

    def comparison(self) -> Comparison:
        """A comparison against this trial's baseline, to ``add`` candidates to."""
        return Comparison(self.workload, self.settings, self.progress.rounds, self.quiet)

    def add(self, comparison: Comparison, candidates: list[Candidate], limit: TimeLimit) -> ArmTrial:
        """The candidates applied together, as one arm of ``comparison``, their outputs compared."""
        candidate = candidates[0] if len(candidates) == 1 else combine(candidates)
        arm = comparison.add(lambda: candidate.transform(self.workload.copy()), limit)
        return ArmTrial(self.workload, candidate, comparison, arm)


class ArmTrial:
    """A candidate measured as one arm of a comparison that other candidates may share."""

    def __init__(self, workload: Workload, candidate: Candidate, comparison: Comparison, arm: Arm) -> None:
        self.workload, self.candidate, self.comparison, self.arm = workload, candidate, comparison, arm

    def result(self) -> tuple[Measurement, ArchitectureDelta | None]:
        """Its measurement, and its architecture delta where it changes the architecture; raises its failure."""
        if self.arm.failure is not None:
            raise self.arm.failure
        measurement = self.comparison.measurement(self.arm)
        if self.candidate.numerics is NumericsContract.ARCHITECTURE:
            return measurement, ArchitectureDelta(before=model_cost(self.workload),
                                                  after=model_cost(self.arm.candidate))
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
