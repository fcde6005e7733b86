"""Baseline against one or more candidates in this process, one block of interleaved rounds at a time.

Each block makes fresh copies of the baseline and of every candidate still being measured, warms them up
``copy_warmup_steps`` steps and times rounds of one step of each, in random order. Every variant ran its first step
in this process when it was added (the numerics check), so its lazy set-up (oneDNN primitives, cuDNN's autotuning,
a compile) is done before the first block, and that block warms up like the later ones: a fresh copy's steps after
that showed no trend beyond the machine's noise (ResNet-18 at batch 8 on the 2-core CPU: 306, 283, 289, 274, 329
and 286 ms, then a median of 275), where waiting for them to settle within 5% took 6 to 16 steps a variant.

A candidate's interval is read from its own steps paired with the baseline's steps of the same rounds
(``benchmark.estimate_speedup``), so candidates measured together share the baseline's copies, warm-ups, first
step and timed steps: the measuring phase pays for one baseline, not one per candidate. Each candidate keeps its
own blocks, stopping rules and time limit (``Arm``); one that fails or runs out of time leaves the others
measuring.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from typing import Any, Callable, Iterator

import torch

from convdoctor.analyzer.capture.contention import QuietPolicy, time_weighted_busy
from convdoctor.analyzer.capture.workload import Workload, time_limit, time_step
from convdoctor.analyzer.measure.benchmark import (
    BlockReading,
    BlockWatch,
    FirstStep,
    Rounds,
    block_of_rounds,
    block_plan,
    compare_first_steps,
    first_step,
    judged,
    over_budget,
    peak_bytes,
    stops_early,
    timer_name,
    undecided,
    warmed_step,
)
from convdoctor.analyzer.measure.results import BenchmarkSettings, Measurement, Numerics
from convdoctor.analyzer.measure.step_memory import PEAK_TENSOR_MEMORY

TimeLimit = tuple[float | None, str]  # seconds (None: no limit), and which option set them
CANDIDATE_TIMEOUT_ADVICE = "it was stopped and the run went on; raise --timeout or --time-budget to let it finish"


class Arm:
    """One candidate's side of a Comparison: its steps paired with the baseline's, its blocks, its stopping state
    (early stop, second look, wrap-up) and what is left of its time limit."""

    def __init__(self, device: torch.device, settings: BenchmarkSettings, limit: TimeLimit) -> None:
        self.device, self.settings = device, settings
        self.candidate: Workload  # made within the limit (``Comparison.add``)
        self.seconds_left, limit_name = limit
        self._what = (f"this trial ({limit_name})" if self.seconds_left is None
                      else f"this trial ({limit_name}: {self.seconds_left:g} s in all)")
        self.numerics: Numerics | None = None
        self.first_step_s: tuple[float, float] = (0.0, 0.0)
        self.kept_step: Callable[[], Any] | None = None  # a ``reuse_copy`` candidate's one copy
        self.times: tuple[list[float], list[float]] = ([], [])  # (baseline, candidate), round by round
        self.blocks: list[int] = []
        self.warmups = [0, 0]
        self.readings: list[BlockReading] = []
        self.plan = block_plan(settings)
        self.extra_blocks = 0
        self.stopped_early = False
        self.wrapped_up = False
        self.spent_s = 0.0  # its own steps and warm-ups, and its share of the baseline's, in its blocks
        self.failure: Exception | None = None
        self.failed_in_block: int | None = None

    @property
    def blocks_left(self) -> int:
        return 0 if self.failure is not None else len(self.plan) - len(self.blocks)

    @property
    def contended_blocks(self) -> int:
        return sum(reading.contended for reading in self.readings)

    @contextlib.contextmanager
    def limit(self) -> Iterator[None]:
        """The candidate's time limit, less what its earlier work took; the device's cache emptied when it fails."""
        started = time.perf_counter()
        try:
            with time_limit(self.seconds_left, self._what, advice=CANDIDATE_TIMEOUT_ADVICE):
                yield
        except Exception:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        finally:
            if self.seconds_left is not None:
                self.seconds_left = max(self.seconds_left - (time.perf_counter() - started), 1e-3)

    def fail(self, exc: Exception, block: int) -> None:
        if self.failure is None:
            self.failure, self.failed_in_block = exc, block

    def rounds(self) -> Rounds:
        return Rounds(times_s=self.times, blocks=list(self.blocks), warmup_steps=(self.warmups[0], self.warmups[1]),
                      other_cores_busy=time_weighted_busy([(r.wall_s, r.others_busy) for r in self.readings]))

    def after_block(self) -> None:
        """Stop once a block was kept under contention (the verdict is withdrawn whatever follows) or when
        settled; take the second look when the planned blocks leave the change open."""
        if self.contended_blocks and sum(self.blocks) >= 2:  # two rounds make an estimate
            self.plan = self.plan[:len(self.blocks)]
        elif not self.blocks_left:
            if self.settings.extra_blocks and not self.extra_blocks and undecided(self.rounds().estimate()):
                self.second_look()
        elif not self.extra_blocks and stops_early(self.settings, self.rounds(), self.spent_s):
            self.plan = self.plan[:len(self.blocks)]
            self.stopped_early = True

    def wrap_up(self) -> None:
        """End as soon as the blocks so far make ``min_blocks`` (the measuring phase's time is up), a second look
        under way included: its extra blocks are those taken."""
        if self.settings.early_stop and not self.wrapped_up:
            planned = len(self.plan)
            self.plan = self.plan[:max(len(self.blocks), self.settings.min_blocks)]
            self.wrapped_up = True
            if self.extra_blocks:
                self.extra_blocks -= planned - len(self.plan)
            else:
                self.stopped_early = len(self.plan) < planned

    def second_look(self) -> bool:
        """Plan ``extra_blocks`` more blocks, once (not after a block kept under contention); whether it did."""
        if (self.extra_blocks or self.wrapped_up or self.settings.extra_blocks <= 0 or self.contended_blocks
                or self.failure is not None
                or (self.settings.early_stop and over_budget(self.settings, self.spent_s))):
            return False
        self.extra_blocks = self.settings.extra_blocks
        base = self.plan[:len(self.blocks)] or self.plan
        self.plan = self.plan[:len(self.blocks)] + [base[i % len(base)] for i in range(self.extra_blocks)]
        self.stopped_early = False
        return True


class Comparison:
    """The baseline against the candidates ``add``ed to it, one block of rounds at a time (``measure`` runs them all).

    Outputs are compared when a candidate is added: one first step of the baseline serves every candidate. Between
    blocks nothing is held but the times and the one copy of a variant with ``Workload.reuse_copy`` (a frozen
    compile: another copy would compile again; the numerics check's copy serves). A block starts
    ``block_spacing_s`` or more after the one before it: on a shared VM the ratio of two variants drifts with the
    machine's state over seconds, so blocks in a row would sample one state and their interval would not hold the
    next run's ratio (benchmarks/INTERVALS.md). A block shorter than that takes more rounds (up to its share of
    ``max_rounds``) rather than leave the wait idle. Other processes' load is watched over every block (``BlockWatch``).
    """

    def __init__(self, baseline: Workload, settings: BenchmarkSettings,
                 progress: Callable[[int, int], None] | None = None, quiet: QuietPolicy | None = None) -> None:
        self.baseline, self.settings, self.progress = baseline, settings, progress
        self.arms: list[Arm] = []
        self._baseline_first: FirstStep | None = None
        self._watch = BlockWatch(quiet)
        self._block_target_s = settings.target_s / len(block_plan(settings))
        self._blocks_run = 0
        self._rounds_run = 0
        self._rng = random.Random(0)
        self._last_start: float | None = None

    def add(self, make: Callable[[], Workload], limit: TimeLimit = (None, "no limit")) -> Arm:
        """Measure the candidate ``make`` returns from the next block on, its first-step outputs compared with the
        baseline's (the first step is where a candidate compiles), both within ``limit``; raises what they raise, or
        ModelTimeoutError."""
        if self._baseline_first is None:
            self._baseline_first = first_step(self.baseline)
        arm = Arm(self.baseline.device, self.settings, limit)
        with arm.limit():
            candidate = arm.candidate = make()
            first = first_step(candidate)
            arm.numerics = compare_first_steps(self.baseline, self._baseline_first, candidate, first)
        arm.first_step_s = (self._baseline_first.seconds, first.seconds)
        arm.kept_step = first.kept_step
        self.arms.append(arm)
        return arm

    @property
    def active(self) -> list[Arm]:
        return [arm for arm in self.arms if arm.blocks_left]

    @property
    def blocks_left(self) -> int:
        return max((arm.blocks_left for arm in self.arms), default=0)

    def run_block(self) -> None:
        """Fresh copies of the baseline and of each candidate with blocks left, warmed up, then a block of rounds;
        ``block_spacing_s`` after the last block. A candidate that fails here is out, with its failure."""
        arms = self.active
        if not arms:
            return
        if self._last_start is not None:
            time.sleep(max(0.0, self.settings.block_spacing_s - (time.perf_counter() - self._last_start)))
        self._last_start = time.perf_counter()
        block, first = self._blocks_run, self._blocks_run == 0
        warmups = self.settings.copy_warmup_steps
        baseline_step, baseline_warmups = warmed_step(self.baseline, self.settings, False,
                                                      self._baseline_first.kept_step, warmups)
        own_s = {id(arm): 0.0 for arm in arms}
        steps: list[Callable[[], Any]] = [baseline_step]
        for arm in list(arms):
            started = time.perf_counter()
            try:
                with arm.limit():
                    step, ran = warmed_step(arm.candidate, self.settings, False, arm.kept_step, warmups)
            except Exception as exc:
                arm.fail(exc, block + 1)
                arms.remove(arm)
                continue
            own_s[id(arm)] += time.perf_counter() - started
            arm.warmups = [arm.warmups[0] + baseline_warmups, arm.warmups[1] + ran]
            steps.append(step)
        times: list[list[float]] = [[] for _ in steps]

        def time_one(which: int) -> float | None:
            if which == 0:
                return time_step(baseline_step, self.baseline.device)
            arm = arms[which - 1]
            if arm.failure is not None:
                return None
            try:
                with arm.limit():
                    seconds = time_step(steps[which], arm.device)
            except Exception as exc:
                arm.fail(exc, block + 1)
                return None
            own_s[id(arm)] += seconds
            return seconds

        shares = [arm.plan[len(arm.blocks)] for arm in arms]
        fewest = max(low for low, _ in shares)
        most = max(fewest, min(high for _, high in shares))
        done = self._rounds_run
        progress = None if self.progress is None else (lambda rounds, total: self.progress(done + rounds, done + total))
        rounds = self._watch.run(
            lambda: block_of_rounds(time_one, (fewest, most), self._block_target_s, self._rng, times, first=first,
                                     progress=progress, fill_until=self._last_start + self.settings.block_spacing_s),
            times)
        self._blocks_run += 1
        self._rounds_run += rounds
        baseline_s = (time.perf_counter() - self._last_start) - sum(own_s.values())
        for index, arm in enumerate(arms, start=1):
            if arm.failure is not None:
                continue
            arm.times[0].extend(times[0])
            arm.times[1].extend(times[index])
            arm.blocks.append(rounds)
            arm.readings.append(self._watch.last)
            arm.spent_s += own_s[id(arm)] + baseline_s / len(arms)
            arm.after_block()

    @functools.cached_property
    def _baseline_peak(self) -> int | None:
        return peak_bytes(self.baseline, self._baseline_first.kept_step)

    def measurement(self, arm: Arm) -> Measurement:
        """The arm's blocks so far (every block, or fewer when it was cut short) as a Measurement."""
        rounds = arm.rounds()
        return Measurement(
            estimate=judged(rounds.estimate(), arm.contended_blocks),
            numerics=arm.numerics,
            rounds=len(rounds.times_s[0]),
            warmup_steps=rounds.warmup_steps,
            first_step_s=arm.first_step_s,
            threads=torch.get_num_threads(),
            device=str(self.baseline.device),
            timer=timer_name(self.baseline.device),
            other_cores_busy=rounds.other_cores_busy,
            blocks=len(rounds.blocks),
            extra_blocks=arm.extra_blocks,
            stopped_early=arm.stopped_early,
            contention=self._watch.contention_of(arm.contended_blocks, rounds.other_cores_busy),
            fresh_copies=arm.kept_step is None and self._baseline_first.kept_step is None,
            peak_bytes=(self._baseline_peak, peak_bytes(arm.candidate, arm.kept_step)),
            peak_memory=PEAK_TENSOR_MEMORY,
        )


def measure(
    baseline: Workload,
    candidate: Workload,
    settings: BenchmarkSettings = BenchmarkSettings(),
    progress: Callable[[int, int], None] | None = None,
    quiet: QuietPolicy | None = None,
) -> Measurement:
    """Time one step of each workload in interleaved rounds (random order within a round) and compare outputs.

    Both run on copies, fresh ones for each block of rounds; the workloads passed in are left as they were. The
    blocks run one after the other, ``block_spacing_s`` apart.
    """
    comparison = Comparison(baseline, settings, progress, quiet)
    arm = comparison.add(lambda: candidate)
    while comparison.blocks_left:
        comparison.run_block()
    if arm.failure is not None:
        raise arm.failure
    return comparison.measurement(arm)
