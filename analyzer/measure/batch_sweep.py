"""Throughput at larger batch sizes against the workload's own batch, until gains stop or memory or time runs out."""

from __future__ import annotations

import time
from typing import Callable

import torch

from convdoctor.analyzer.capture.contention import QuietPolicy
from convdoctor.analyzer.capture.workload import Workload, describe_exception
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, measure_throughput
from convdoctor.analyzer.measure.results import (
    MIN_EFFECT,
    BatchSweep,
    ThroughputPoint,
    Verdict,
)


def sweep_batch_sizes(
    workload: Workload,
    factors: tuple[int, ...],
    settings: BenchmarkSettings = BenchmarkSettings(),
    budget_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    before_each: Callable[[int], None] | None = None,
    patience: int = 2,
    quiet: QuietPolicy | None = None,
) -> BatchSweep:
    """Measure samples/s at ``workload.batch_size × factor`` for each factor in growing order.

    A batch gains when the low end of its interval beats the best median ratio so far by more than MIN_EFFECT.
    The sweep stops after ``patience`` batches in a row that do not gain (one size can hit a worse kernel than
    the next, so a single miss does not end it), at the first batch that runs out of memory, or once
    ``budget_s`` seconds are spent. Inputs come from the workload's get_inputs(batch_size).
    """
    baseline_batch = workload.batch_size
    if not baseline_batch:
        raise ValueError("the workload's inputs have no batch dimension")
    started = time.perf_counter()
    points: list[ThroughputPoint] = []
    misses = 0
    for factor in sorted(factors):
        batch = baseline_batch * factor
        if budget_s is not None and time.perf_counter() - started >= budget_s:
            return BatchSweep(baseline_batch, points, f"the time budget ({budget_s:g} s) ran out before batch {batch}")
        if before_each is not None:
            before_each(batch)
        try:
            point = measure_throughput(workload, workload.with_batch_size(batch), settings, progress, quiet)
        except (RuntimeError, MemoryError) as exc:
            if not _out_of_memory(exc):
                raise
            _free(workload)
            return BatchSweep(baseline_batch, points, f"batch {batch} ran out of memory: {describe_exception(exc)}")
        best = BatchSweep(baseline_batch, points, "").best
        best_before = best.estimate.speedup if best is not None else 1.0
        points.append(point)
        gained = point.estimate.verdict is Verdict.FASTER and point.estimate.ci_low > best_before * (1 + MIN_EFFECT)
        misses = 0 if gained else misses + 1
        if misses >= patience:
            return BatchSweep(baseline_batch, points,
                              f"{'batch' if patience == 1 else f'{patience} batches up to'} {batch} were not "
                              f"measurably faster per sample than batch {_best_batch(points, baseline_batch)}: "
                              "gains stopped")
    return BatchSweep(baseline_batch, points, f"the largest batch asked for (×{max(factors)}) was reached")


def _best_batch(points: list[ThroughputPoint], baseline_batch: int) -> int:
    """The batch of BatchSweep.best over ``points``, or the baseline batch when none was measurably faster."""
    best = BatchSweep(baseline_batch, points, "").best
    return best.batch_size if best is not None else baseline_batch


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's "can't allocate memory"."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "allocate memory" in str(exc)


def _free(workload: Workload) -> None:
    if workload.device.type == "cuda":
        torch.cuda.empty_cache()
