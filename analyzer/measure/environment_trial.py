"""Measure a model file under two process environments (allocator settings, LD_PRELOAD): what only a process start
can change, so baseline and candidate each run in a worker process of their own (``step_server``).

Both workers load the same file with the same seed and warm up ``warmup_steps`` steps; then rounds alternate
between them in random order, one step each, while the other waits idle on its pipe. The bootstrap interval and
verdict are the in-process harness's (``benchmark.estimate_speedup``), over blocks of consecutive rounds, each with a
fresh pair of workers. Outputs of the first pair's first step are compared on their first values
(``step_server.COMPARED_VALUES``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable

from convdoctor.analyzer.capture.contention import QuietPolicy
from convdoctor.analyzer.capture.workload import Workload
from convdoctor.analyzer.measure.benchmark import (
    BenchmarkSettings,
    BlockWatch,
    Measurement,
    Numerics,
    alternating_rounds,
)

PEAK_RSS = "the worker process's peak resident memory (ru_maxrss), model and framework included"


class WorkerError(RuntimeError):
    """A worker process failed to load or run the model; the message is its one-line reason."""


class _Worker:
    """One step_server process and its reply pipe."""

    def __init__(self, workload: Workload, environment: dict[str, str]) -> None:
        batch_size = workload.batch_size if workload.input_factory is not None else None  # get_inputs() as it is
        request = {"model_file": workload.source, "device": str(workload.device), "mode": workload.mode.value,
                   "batch_size": batch_size}
        read_fd, write_fd = os.pipe()
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convdoctor.analyzer.measure.step_server", json.dumps(request), str(write_fd)],
            stdin=subprocess.PIPE, stdout=self._log, stderr=self._log, pass_fds=(write_fd,), text=True,
            env={**os.environ, **environment},
        )
        os.close(write_fd)
        self._replies = os.fdopen(read_fd, "r")
        self.ready: dict[str, Any] = {}
        self.max_rss_bytes: int | None = None

    def wait_loaded(self) -> None:
        """Until the worker has loaded the model file (imports and model built, nothing run)."""
        self._receive()

    def warm_up(self, steps: int) -> None:
        """The worker's first step and ``steps`` warm-up steps; ``ready`` holds what it reports."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"warm {steps}\n")
        self.process.stdin.flush()
        self.ready = self._receive()

    def steps(self, count: int) -> list[float]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        reply = self._receive()
        self.max_rss_bytes = reply["max_rss_bytes"]
        return reply["times"]

    def close(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            try:
                self.process.stdin.write("0\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._replies.close()
        self._log.close()

    def _receive(self) -> dict[str, Any]:
        line = self._replies.readline()
        if not line:
            self.process.wait()
            self._log.seek(0)
            tail = self._log.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise WorkerError(f"the worker process ended (exit code {self.process.returncode}): {tail[0][:300]}")
        message = json.loads(line)
        if "error" in message:
            raise WorkerError(message["error"])
        return message


def measure_environment(
    workload: Workload, environment: dict[str, str], settings: BenchmarkSettings = BenchmarkSettings(),
    progress: Callable[[int, int], None] | None = None, quiet: QuietPolicy | None = None,
) -> Measurement:
    """Baseline (this process's environment) against the same model file with ``environment`` added.

    Each block of rounds has a fresh pair of workers: what a process start changes (the allocator's state, where
    memory lands) differs from one process to the next by more than its rounds' noise (small_cnn's allocator
    setting measured 1.32x, 1.48x and 1.26x in three runs with one pair each, intervals apart), so the interval is
    bootstrapped over pairs of processes as well as rounds.
    """
    if not os.path.isfile(workload.source):
        raise WorkerError("an environment candidate needs the model file (profile MODEL_PY), not a model object")
    pairs = _WorkerPairs(workload, environment, settings)
    watch = BlockWatch(quiet)  # the workers, this process's children, are measured processes, not others
    try:
        rounds = alternating_rounds(lambda which: pairs.current[which].steps(1)[0], settings, progress,
                                    new_block=pairs.start, watch=watch)
    finally:
        pairs.close()
    baseline, candidate = pairs.first_ready
    return Measurement(
        estimate=watch.judged(rounds.estimate()),
        numerics=_numerics(baseline["values"], candidate["values"]),
        rounds=len(rounds.times_s[0]),
        warmup_steps=pairs.warmup_steps,
        first_step_s=(baseline["first_step_s"], candidate["first_step_s"]),
        threads=baseline["threads"],
        device=str(workload.device),
        timer="perf_counter in worker processes, a fresh pair for each block, rounds alternating",
        other_cores_busy=rounds.other_cores_busy,
        blocks=len(rounds.blocks),
        stopped_early=rounds.stopped_early,
        contention=watch.contention,
        fresh_copies=True,
        peak_bytes=pairs.peaks,
        peak_memory=PEAK_RSS,
    )


class _WorkerPairs:
    """The (baseline, candidate) worker processes of each block in turn, and what they reported."""

    def __init__(self, workload: Workload, environment: dict[str, str], settings: BenchmarkSettings) -> None:
        self._workload, self._settings, self._environment = workload, settings, environment
        self.current: list[_Worker] = []
        self.first_ready: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        self.warmup_steps = (0, 0)
        self.peaks: tuple[int | None, int | None] = (None, None)

    def start(self, block: int) -> None:
        """Close the previous block's workers and start this block's: both load at once (imports, the model), then
        each runs its first step and ``warmup_steps`` more in turn (neither warms up while the other runs). Every
        block's workers are equally fresh processes, so the first block warms up as the later ones do."""
        self.close()
        for env in ({}, self._environment):
            self.current.append(_Worker(self._workload, env))
        for worker in self.current:
            worker.wait_loaded()
        for worker in self.current:
            worker.warm_up(self._settings.warmup_steps)
        ready = (self.current[0].ready, self.current[1].ready)
        if block == 0:
            self.first_ready = ready
        self.warmup_steps = (self.warmup_steps[0] + ready[0]["ready"], self.warmup_steps[1] + ready[1]["ready"])

    def close(self) -> None:
        """End the current block: note its peaks, and close its workers."""
        if self.current:
            self.peaks = (_larger(self.peaks[0], self.current[0].max_rss_bytes),
                          _larger(self.peaks[1], self.current[1].max_rss_bytes))
        for worker in self.current:
            worker.close()
        self.current = []



def _larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _numerics(baseline: list[float], candidate: list[float]) -> Numerics:
    if len(baseline) != len(candidate):
        return Numerics(max_abs_error=float("inf"), max_rel_error=float("inf"))
    error = max((abs(a - b) for a, b in zip(baseline, candidate)), default=0.0)
    scale = max((abs(a) for a in baseline), default=0.0)
    return Numerics(max_abs_error=error, max_rel_error=error / scale if scale else error)
