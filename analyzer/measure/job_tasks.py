"""What the workers of a data-parallel job do to measure: time baseline against candidate as a whole job. Every rank
runs the same steps in the same order, since each DDP step is a collective."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, combine
from convdoctor.analyzer.capture.host_allocator import keep_heap
from convdoctor.analyzer.capture.workload import Workload, make_step, synchronize
from convdoctor.analyzer.measure.benchmark import (
    BenchmarkSettings,
    Measurement,
    alternating_rounds,
    compare_first_step,
)
from convdoctor.analyzer.measure.model_cost import ArchitectureDelta, model_cost

JOB_TIMER = "barrier, then perf_counter on every rank; a step takes as long as its slowest rank"


@dataclass(frozen=True)
class MeasureTask:
    """Time the workload against the candidates applied together, as a whole job (see ``measure_job``)."""

    candidates: tuple[Candidate, ...]
    settings: BenchmarkSettings

    def run(self, workload: Workload, rank: int) -> tuple[Measurement, ArchitectureDelta | None]:
        candidate = self.candidates[0] if len(self.candidates) == 1 else combine(list(self.candidates))
        trial = candidate.transform(workload.copy())
        result = measure_job(workload, trial, self.settings)
        delta = None
        if candidate.numerics is NumericsContract.ARCHITECTURE:
            delta = ArchitectureDelta(before=model_cost(workload), after=model_cost(trial))
        return result, delta


def measure_job(baseline: Workload, candidate: Workload, settings: BenchmarkSettings) -> Measurement:
    """Interleaved rounds of one job step of each variant, as ``benchmark.measure`` but collective.

    A fixed number of warm-up steps (ranks could not agree on when timings settle), a barrier before each timed
    step, and the slowest rank's time as the step's: all ranks see the same times, so they stop together. Numerics
    compare one local step of each (no communication), which is what a candidate changes. Each rank keeps glibc's
    heap first, as ``profile`` does for a single process: the measuring ranks are fresh processes, and with glibc's
    defaults a step's time depends on what the process allocated before (``host_allocator``).
    """
    keep_heap()
    numerics, first_step_s = compare_first_step(baseline, candidate)
    baseline, candidate = baseline.copy(), candidate.copy()
    steps = (make_step(baseline), make_step(candidate))
    for step in steps:
        for _ in range(settings.warmup_steps):
            step()
    rounds = alternating_rounds(lambda which: _job_step_s(steps[which], baseline.device), settings)
    return Measurement(
        estimate=rounds.estimate(),
        numerics=numerics,
        rounds=len(rounds.times_s[0]),
        warmup_steps=(settings.warmup_steps, settings.warmup_steps),
        first_step_s=first_step_s,
        threads=torch.get_num_threads(),
        device=str(baseline.device),
        timer=JOB_TIMER,
        blocks=len(rounds.blocks),
    )


def _job_step_s(step: Any, device: torch.device) -> float:
    """Seconds of one step of the job: every rank starts together, the slowest rank's time counts."""
    dist.barrier()
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64,
                           device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return float(elapsed.item())
