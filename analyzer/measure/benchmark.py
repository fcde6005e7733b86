"""The A/B harness: baseline against candidate, interleaved, with a confidence interval and a numerics check."""

from __future__ import annotations

import gc
import itertools
import math
import random
import statistics
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from convdoctor.analyzer.capture.contention import (
    MAX_REDONE_BLOCKS,
    QuietPolicy,
    cpu_jiffies,
    other_cores_busy,
    own_processes,
    tick_margin,
    time_weighted_busy,
)
from convdoctor.analyzer.capture.workload import (
    Mode,
    Workload,
    call_model,
    flat_tensors,
    make_step,
    map_tensors,
    synchronize,
    time_step,
    training_loss,
)
from convdoctor.analyzer.measure.results import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    EARLY_CONFIDENCE,
    EARLY_WIDTH,
    FIRST_STEP_SEED,
    GRADIENT_NORM_FLOOR,
    GRADIENT_REFERENCE_FLOOR,
    MIN_EFFECT,
    REFERENCE_FACTOR,
    BenchmarkSettings,
    Contention,
    GradientReference,
    Measurement,
    Numerics,
    SpeedupEstimate,
    ThroughputPoint,
    Verdict,
)
from convdoctor.analyzer.measure.step_memory import step_peak_bytes


def estimate_speedup(baseline_s: list[float], candidate_s: list[float], *, blocks: list[int] | None = None,
                     seed: int = 0, confidence: float = CONFIDENCE) -> SpeedupEstimate:
    """Ratio of medians with a ``confidence`` (95%) interval; the verdict is decided by the interval.

    ``blocks`` gives how many consecutive rounds each block holds (see BenchmarkSettings.blocks). The interval is
    the paired bootstrap's (``bootstrap_interval``), widened, where it is narrower, to the Student-t interval of the
    blocks' own speedups (``between_blocks``) when there are two or more blocks.
    """
    if len(baseline_s) != len(candidate_s) or len(baseline_s) < 2:
        raise ValueError("need two or more paired rounds")
    blocks = blocks or [len(baseline_s)]
    if sum(blocks) != len(baseline_s) or min(blocks) < 1:
        raise ValueError("the blocks must hold every round, one or more each")
    base_median, cand_median = statistics.median(baseline_s), statistics.median(candidate_s)
    low, high = bootstrap_interval(baseline_s, candidate_s, blocks, seed, confidence)
    if len(blocks) > 1:
        block_low, block_high = between_blocks(baseline_s, candidate_s, blocks, base_median / cand_median,
                                               confidence)
        low, high = min(low, block_low), max(high, block_high)
    verdict = (Verdict.FASTER if low > 1.0 + MIN_EFFECT else Verdict.SLOWER if high < 1.0 - MIN_EFFECT
               else Verdict.NO_DIFFERENCE)
    return SpeedupEstimate(
        baseline_ms=base_median * 1e3,
        candidate_ms=cand_median * 1e3,
        speedup=base_median / cand_median,
        ci_low=low,
        ci_high=high,
        verdict=verdict,
    )


def settled(rounds: Rounds) -> bool:
    """Whether the blocks so far settle the comparison (``BenchmarkSettings.early_stop``): read at EARLY_CONFIDENCE,
    the interval decides (faster or slower) and is at most EARLY_WIDTH wide, or it rules out a speedup above
    MIN_EFFECT (whatever more blocks would say, the candidate is no faster)."""
    early = estimate_speedup(*rounds.times_s, blocks=rounds.blocks, confidence=EARLY_CONFIDENCE)
    decided = early.verdict is not Verdict.NO_DIFFERENCE and early.ci_high / early.ci_low <= EARLY_WIDTH
    return decided or early.ci_high <= 1.0 + MIN_EFFECT


def stops_early(settings: BenchmarkSettings, rounds: Rounds, spent_s: float) -> bool:
    """Whether a comparison with ``rounds`` so far, its own blocks having taken ``spent_s``, ends here in the default
    mode (``early_stop``): once it has ``min_blocks``, when ``settled`` or past its ``budget_s``."""
    return (settings.early_stop and len(rounds.blocks) >= settings.min_blocks
            and (over_budget(settings, spent_s) or settled(rounds)))


def over_budget(settings: BenchmarkSettings, spent_s: float) -> bool:
    return settings.budget_s is not None and spent_s >= settings.budget_s


def undecided(estimate: SpeedupEstimate) -> bool:
    """The interval reaches into 1 ± MIN_EFFECT while its median lies outside that band: a change the blocks so far
    can neither confirm nor rule out, which more blocks may decide."""
    return (estimate.verdict is Verdict.NO_DIFFERENCE
            and not 1.0 - MIN_EFFECT <= estimate.speedup <= 1.0 + MIN_EFFECT)


def bootstrap_interval(baseline_s: list[float], candidate_s: list[float], blocks: list[int],
                       seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The paired bootstrap interval of the ratio of medians: each resample draws blocks first, then rounds within
    the drawn blocks (rounds alone with one block)."""
    rng = random.Random(seed)
    starts = list(itertools.accumulate(blocks, initial=0))
    ratios = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        picks = []
        for _ in blocks:
            block = rng.randrange(len(blocks)) if len(blocks) > 1 else 0
            first, size = starts[block], blocks[block]
            picks.extend(first + rng.randrange(size) for _ in range(size))
        base = statistics.median(baseline_s[i] for i in picks)
        ratios.append(base / statistics.median(candidate_s[i] for i in picks))
    ratios.sort()
    tail = (1 - confidence) / 2
    return ratios[int(tail * BOOTSTRAP_RESAMPLES)], ratios[min(BOOTSTRAP_RESAMPLES - 1,
                                                               int((1 - tail) * BOOTSTRAP_RESAMPLES))]


def between_blocks(baseline_s: list[float], candidate_s: list[float], blocks: list[int],
                   speedup: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The interval of ``speedup`` that the blocks' own speedups (ratios of their medians) give as independent
    samples: ``speedup`` times and over exp(t * s / sqrt(n)), s their standard deviation in logs, t Student's at
    ``confidence`` with n - 1 degrees of freedom.

    On a shared machine the ratio of two variants drifts with the machine's state over seconds (blocks 0.5 s apart
    correlate about 0.5, 5-7 s apart hardly at all); a bootstrap over a few blocks reads their spread as all there
    is: with 3 blocks 5 s apart it held the long-run ratio in 75% of measurements, with this interval 92%
    (benchmarks/INTERVALS.md).
    """
    starts = list(itertools.accumulate(blocks, initial=0))
    logs = [math.log(statistics.median(baseline_s[a:b]) / statistics.median(candidate_s[a:b]))
            for a, b in zip(starts, starts[1:])]
    half = student_t(confidence, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return speedup / math.exp(half), speedup * math.exp(half)


def student_t(confidence: float, freedom: int) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``freedom`` degrees of freedom: the t at which
    ``t_coverage`` reaches ``confidence``, found by bisection; beyond 100 degrees the Cornish-Fisher expansion
    around the normal quantile (within 1e-4 there)."""
    if freedom < 1:
        raise ValueError("Student's t needs one or more degrees of freedom")
    if freedom > 100:
        z, v = statistics.NormalDist().inv_cdf((1 + confidence) / 2), freedom
        return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
                + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))
    low, high = 0.0, 1.0
    while t_coverage(high, freedom) < confidence:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_coverage(middle, freedom) < confidence else (low, middle)
    return (low + high) / 2


def t_coverage(t: float, freedom: int) -> float:
    """P(|T| < t) for Student's t with a whole number of degrees of freedom, in closed form (Abramowitz and Stegun
    26.7.3-4: a finite series in the cosine of atan(t / sqrt(freedom)))."""
    theta = math.atan(t / math.sqrt(freedom))
    cos2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if freedom % 2 == 0:  # sin θ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + …), up to cos^(freedom-2)
        for k in range(1, freedom // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if freedom == 1:
        return 2 * theta / math.pi
    for k in range(1, (freedom - 1) // 2):  # 2/π (θ + sin θ cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + …))
        term *= cos2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def compare_outputs(baseline: Any, candidate: Any) -> Numerics:
    """Max absolute and relative error over the floating-point tensors of two outputs of the same structure."""
    base, cand = flat_tensors(baseline), flat_tensors(candidate)
    if len(base) != len(cand):
        return Numerics(max_abs_error=float("inf"), max_rel_error=float("inf"))
    max_abs, max_ref = 0.0, 0.0
    for b, c in zip(base, cand):
        if not b.is_floating_point():
            continue
        if b.shape != c.shape:
            return Numerics(max_abs_error=float("inf"), max_rel_error=float("inf"))
        b64, c64 = b.detach().double().cpu(), c.detach().double().cpu()
        max_abs = max(max_abs, float((b64 - c64).abs().max()) if b64.numel() else 0.0)
        max_ref = max(max_ref, float(b64.abs().max()) if b64.numel() else 0.0)
    return Numerics(max_abs_error=max_abs, max_rel_error=max_abs / max_ref if max_ref > 0 else max_abs)


class BlockWatch:
    """Other processes' load over each block of rounds, under the run's QuietPolicy: before a block that follows a
    contended one it waits for quiet; a block taken under contention is redone when the wait ended in quiet (up to
    MAX_REDONE_BLOCKS times), and kept and counted when it did not. The measured processes are this one and its
    descendants (worker processes)."""

    def __init__(self, quiet: QuietPolicy | None) -> None:
        self.quiet = quiet or QuietPolicy(threads=torch.get_num_threads())
        self.kept: list[tuple[float, float | None]] = []  # (wall seconds, other cores busy) of each kept block
        self.contended_blocks = 0  # kept although contended
        self.redone_blocks = 0
        self.last = BlockReading(0.0, None, False)

    def run(self, block: Callable[[], int], times: Sequence[list[float]]) -> int:
        """``block()`` (it appends its rounds to the lists in ``times`` and returns how many it took), redone while
        contended and the wait for quiet succeeds; ``last`` holds the kept block's reading."""
        while True:
            self.quiet.wait_for_quiet()
            marks, measured = [len(series) for series in times], own_processes()
            started, before = time.perf_counter(), cpu_jiffies(measured)
            rounds = block()
            wall = time.perf_counter() - started
            busy = other_cores_busy(before, cpu_jiffies(measured), wall)
            contended = self.quiet.note_block(busy, tick_margin(wall, len(measured)))
            if contended and self.redone_blocks < MAX_REDONE_BLOCKS and self.quiet.wait_for_quiet():
                for series, mark in zip(times, marks):
                    del series[mark:]
                self.redone_blocks += 1
                continue
            self.kept.append((wall, busy))
            self.contended_blocks += contended
            self.last = BlockReading(wall, busy, contended)
            return rounds

    @property
    def other_cores_busy(self) -> float | None:
        return time_weighted_busy(self.kept)

    @property
    def contention(self) -> Contention:
        return self.contention_of(self.contended_blocks, self.other_cores_busy)

    def contention_of(self, contended_blocks: int, others_busy: float | None) -> Contention:
        """``contended_blocks`` kept under contention (of all kept blocks, or of those one arm of a shared
        comparison took part in), the blocks redone, and (when any was kept) what kept the cores busy: the busiest
        reading taken while waiting, or the blocks' own average ``others_busy``."""
        busiest = None
        if contended_blocks:
            worst = self.quiet.worst
            busiest = worst.describe() if worst is not None else f"{others_busy or 0:.1f} cores"
        return Contention(contended_blocks, self.redone_blocks, busiest)

    def judged(self, estimate: SpeedupEstimate) -> SpeedupEstimate:
        return judged(estimate, self.contended_blocks)


def judged(estimate: SpeedupEstimate, contended_blocks: int) -> SpeedupEstimate:
    """The estimate, its verdict withdrawn (``Verdict.UNRELIABLE``) when a kept block was contended."""
    return replace(estimate, verdict=Verdict.UNRELIABLE) if contended_blocks else estimate


@dataclass(frozen=True)
class BlockReading:
    """A kept block's wall seconds, the cores other processes kept busy meanwhile, and whether that was contention."""

    wall_s: float
    others_busy: float | None
    contended: bool


def peak_bytes(workload: Workload, step: Callable[[], Any] | None) -> int | None:
    """``step_memory.step_peak_bytes``, or None where it fails."""
    try:
        return step_peak_bytes(workload, step)
    except Exception:  # a memory reading must not cost the measurement it belongs to
        return None


def measure_throughput(
    baseline: Workload,
    candidate: Workload,
    settings: BenchmarkSettings = BenchmarkSettings(),
    progress: Callable[[int, int], None] | None = None,
    quiet: QuietPolicy | None = None,
) -> ThroughputPoint:
    """Time one step of each workload in interleaved rounds, as ``measure`` does, and compare time per sample.

    The two may run different batch sizes: each round's step time is divided by its workload's batch size, so the
    ratio is one of throughputs (samples/s) and the bootstrap interval is taken over those per-sample times.
    Outputs are not compared (they have different shapes).
    """
    batches = (baseline.batch_size, candidate.batch_size)
    if not batches[0] or not batches[1]:
        raise ValueError("a throughput comparison needs inputs with a batch dimension in both workloads")
    watch = BlockWatch(quiet)
    rounds = _interleaved_rounds(baseline, candidate, settings, progress, watch)
    per_sample = [[t / batch for t in times] for times, batch in zip(rounds.times_s, batches)]
    measurement = Measurement(
        estimate=watch.judged(estimate_speedup(*per_sample, blocks=rounds.blocks)),
        numerics=None,
        rounds=len(per_sample[0]),
        warmup_steps=rounds.warmup_steps,
        first_step_s=None,
        threads=torch.get_num_threads(),
        device=str(baseline.device),
        timer=timer_name(baseline.device),
        other_cores_busy=rounds.other_cores_busy,
        blocks=len(rounds.blocks),
        stopped_early=rounds.stopped_early,
        contention=watch.contention,
    )
    return ThroughputPoint(baseline_batch=batches[0], batch_size=batches[1], measurement=measurement)


@dataclass(frozen=True)
class Rounds:
    """The step times of two variants, one of each per round, taken in consecutive blocks of rounds."""

    times_s: tuple[list[float], list[float]]  # (baseline, candidate)
    blocks: list[int]  # rounds in each block, in order
    warmup_steps: tuple[int, int] = (0, 0)  # (baseline, candidate): steps run before timing, all blocks together
    other_cores_busy: float | None = None
    stopped_early: bool = False  # settled before the planned blocks (BenchmarkSettings.early_stop)

    def estimate(self) -> SpeedupEstimate:
        return estimate_speedup(*self.times_s, blocks=self.blocks)


def _interleaved_rounds(
    baseline: Workload, candidate: Workload, settings: BenchmarkSettings,
    progress: Callable[[int, int], None] | None, watch: BlockWatch,
) -> Rounds:
    """Per block, fresh copies of both, warmed up; then one timed step of each per round (random order within a
    round), the blocks one after the other. Both run in this process, with the same thread count; garbage
    collection is kept out of timed regions. The workloads passed in are left as they were (no outputs compared).
    """
    variants = (baseline, candidate)
    steps: list[Callable[[], Any]] = []
    warmups = [0, 0]

    def fresh_copies(block: int) -> None:
        steps.clear()  # the previous block's copies go before the next ones are made
        fresh, ran = fresh_steps(variants, settings, first=block == 0)
        steps.extend(fresh)
        warmups[:] = [done + now for done, now in zip(warmups, ran)]

    rounds = alternating_rounds(lambda which: time_step(steps[which], variants[which].device), settings, progress,
                                new_block=fresh_copies, watch=watch)
    return replace(rounds, warmup_steps=(warmups[0], warmups[1]))


def fresh_steps(variants: tuple[Workload, ...], settings: BenchmarkSettings,
                first: bool) -> tuple[list[Callable[[], Any]], list[int]]:
    """A warmed-up step of a fresh copy of each variant (``warmed_step``), and how many warm-up steps each ran."""
    warmed = [warmed_step(workload, settings, first) for workload in variants]
    return [step for step, _ in warmed], [steps for _, steps in warmed]


def warmed_step(workload: Workload, settings: BenchmarkSettings, first: bool, step: Callable[[], Any] | None = None,
                steps: int | None = None) -> tuple[Callable[[], Any], int]:
    """A step of a fresh copy of ``workload`` (or ``step``, that of a copy kept from earlier), warmed up: until the
    timings settle in a first block, ``steps`` (default ``warmup_steps``) steps in later ones; and how many
    warm-up steps ran."""
    step = step if step is not None else make_step(workload.copy())
    if first:
        return step, warm_up(step, workload, settings)
    steps = settings.warmup_steps if steps is None else steps
    for _ in range(steps):
        time_step(step, workload.device)
    return step, steps


def alternating_rounds(
    time_one: Callable[[int], float], settings: BenchmarkSettings,
    progress: Callable[[int, int], None] | None = None,
    new_block: Callable[[int], None] | None = None,
    watch: BlockWatch | None = None,
) -> Rounds:
    """Per round, one timed step of each variant (0: baseline, 1: candidate) in random order, with the garbage
    collector kept out, in ``settings.blocks`` consecutive blocks. ``new_block(index)``, when given, runs before each
    block (outside the timed steps): it may make fresh copies to time. A block ends when it has its share of
    ``min_rounds`` and of ``target_s`` (or of ``max_rounds``); with ``early_stop`` the blocks end once ``settled``.
    ``watch``, when given, watches other processes' load over each block (a job's ranks are not watched: each
    other's load is theirs).

    The stopping rules read only step times, so the ranks of a job, which share their times, stop together.
    """
    rng = random.Random(0)
    times: tuple[list[float], list[float]] = ([], [])
    plan = block_plan(settings)
    block_sizes: list[int] = []
    stopped_early = False
    started = time.perf_counter()
    for block, shares in enumerate(plan):
        if new_block is not None:
            new_block(block)
        done = sum(block_sizes)
        block_progress = None if progress is None else (
            lambda rounds, _, done=done: progress(done + rounds, settings.max_rounds))

        def one_block(shares: tuple[int, int] = shares, first: bool = block == 0,
                      block_progress: Callable[[int, int], None] | None = block_progress) -> int:
            return block_of_rounds(time_one, shares, settings.target_s / len(plan), rng, times, first=first,
                                    progress=block_progress)

        block_sizes.append(one_block() if watch is None else watch.run(one_block, times))
        if watch is not None and watch.contended_blocks and sum(block_sizes) >= 2:  # no verdict whatever follows
            break
        if block + 1 < len(plan) and stops_early(settings, Rounds(times, list(block_sizes)),
                                                 time.perf_counter() - started):
            stopped_early = True
            break
    return Rounds(times_s=times, blocks=block_sizes, stopped_early=stopped_early,
                  other_cores_busy=None if watch is None else watch.other_cores_busy)


def block_plan(settings: BenchmarkSettings) -> list[tuple[int, int]]:
    """(min rounds, max rounds) of each block: ``min_rounds`` and ``max_rounds`` shared out over the blocks."""
    blocks = max(1, min(settings.blocks, settings.max_rounds))
    return list(zip(_shares(settings.min_rounds, blocks), _shares(settings.max_rounds, blocks)))


def block_of_rounds(
    time_one: Callable[[int], float | None], shares: tuple[int, int], target_s: float, rng: random.Random,
    times: Sequence[list[float]], *, first: bool, progress: Callable[[int, int], None] | None,
    fill_until: float | None = None,
) -> int:
    """One block of rounds appended to ``times`` (one list per variant: 0 the baseline, then each candidate); how
    many rounds it took. Each round times one step of every variant in random order; a candidate whose ``time_one``
    gives None (it failed) takes no further part. The block ends when it has
    ``shares[0]`` rounds and ``target_s`` of timed steps of the baseline and a candidate (the candidates' mean), or
    ``shares[1]`` rounds; with ``fill_until`` (a ``perf_counter`` time: when the next block may start), not before
    then, unless at ``shares[1]`` rounds: more rounds rather than an idle wait."""
    min_rounds, max_rounds = shares
    order = list(range(len(times)))
    gc_was_enabled = gc.isenabled()
    gc.collect(2 if first else 1)  # a full collection takes 0.1 s with torch loaded: once is enough
    gc.disable()
    try:
        block_s = 0.0
        for round_index in range(max_rounds):
            rng.shuffle(order)
            elapsed = {}
            for which in list(order):
                seconds = time_one(which)
                if seconds is None:  # a candidate that failed: out of the rest of the block
                    order.remove(which)
                    continue
                times[which].append(seconds)
                elapsed[which] = seconds
            block_s += elapsed[0] + sum(elapsed[w] for w in order if w) / max(1, len(order) - 1)
            if progress is not None:
                progress(round_index + 1, max_rounds)
            if (round_index + 1 >= min_rounds and block_s >= target_s
                    and (fill_until is None or time.perf_counter() >= fill_until)):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return round_index + 1


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole shares, the larger first, each at least 1."""
    return [max(1, total // parts + (index < total % parts)) for index in range(parts)]


def timer_name(device: torch.device) -> str:
    return "torch.cuda.synchronize + perf_counter" if device.type == "cuda" else "perf_counter"


@dataclass(frozen=True)
class FirstStep:
    """A variant's first step on a fresh copy: its output, its parameter gradients (train mode), how long it took
    (compilation and lazy set-up included), and the copy's step for later blocks (a variant with ``reuse_copy``)."""

    output: Any
    grads: dict[str, torch.Tensor]
    seconds: float
    kept_step: Callable[[], Any] | None


def first_step(workload: Workload) -> FirstStep:
    """The first step of a fresh copy of ``workload``; an eval variant with ``reuse_copy`` keeps that copy's step,
    compiled by this first call, for the blocks of rounds."""
    probe = workload.copy()
    output, grads, seconds = _first_step(workload, probe)
    keep = workload.reuse_copy and workload.mode is Mode.EVAL
    return FirstStep(output, grads, seconds, make_step(probe) if keep else None)


def compare_first_step(baseline: Workload, candidate: Workload) -> tuple[Numerics, tuple[float, float]]:
    """Outputs (and, in train mode, parameter gradients) of a first step on fresh copies of both workloads
    (``compare_first_steps``), and how long each first call took: this is where a candidate compiles."""
    steps = first_step(baseline), first_step(candidate)
    return compare_first_steps(baseline, steps[0], candidate, steps[1]), (steps[0].seconds, steps[1].seconds)


def compare_first_steps(baseline: Workload, base: FirstStep, candidate: Workload, cand: FirstStep) -> Numerics:
    """How far the candidate's first-step outputs (and, in train mode, parameter gradients) are from the baseline's.

    Gradients are paired by parameter name over the parameters both models have, so that a candidate which
    removes a parameter (a redundant bias) or wraps the model (names gain a ``model.`` prefix) is still checked.
    """
    outputs = compare_outputs(base.output, cand.output)
    base_grads = base.grads
    cand_grads = {_unwrapped(name, base_grads): grad for name, grad in cand.grads.items()}
    shared = [name for name in base_grads if name in cand_grads]
    if baseline.mode is not Mode.TRAIN or not shared:
        return outputs
    grads = compare_outputs([base_grads[n] for n in shared], [cand_grads[n] for n in shared])
    reference = None
    if grads.max_rel_error > GRADIENT_REFERENCE_FLOOR:
        reference = _gradient_reference(baseline, candidate, base_grads, cand_grads, shared)
    return Numerics(outputs.max_abs_error, outputs.max_rel_error, grads.max_abs_error, grads.max_rel_error,
                    reference)


def _gradient_reference(baseline: Workload, candidate: Workload, base_grads: dict[str, torch.Tensor],
                        cand_grads: dict[str, torch.Tensor], shared: list[str]) -> GradientReference | None:
    """Both float32 runs' gradients against the float64 baseline's; when the candidate's are more than
    REFERENCE_FACTOR times further, the candidate's own float64 gradients too (same step, or another one)."""
    exact = _baseline_float64_grads(baseline)
    if exact is None or not all(n in exact for n in shared):
        return None
    baseline_error, _ = worst_parameter_error(exact, base_grads, shared)
    candidate_error, worst = worst_parameter_error(exact, cand_grads, shared)
    same_step = None
    if candidate_error > REFERENCE_FACTOR * baseline_error:
        candidate_exact = _float64_grads(candidate)
        if candidate_exact is not None:
            candidate_exact = {_unwrapped(name, exact): grad for name, grad in candidate_exact.items()}
            if all(n in candidate_exact for n in shared):
                same_step, _ = worst_parameter_error(exact, candidate_exact, shared)
    return GradientReference(baseline_error, candidate_error, worst, same_step)


def worst_parameter_error(exact: dict[str, torch.Tensor], approx: dict[str, torch.Tensor],
                          names: list[str]) -> tuple[float, str]:
    """The largest error of ``approx`` against ``exact`` over the named parameters, and that parameter's name.

    A parameter's error is the norm of its gradient difference over the norm of its exact gradient, floored at
    GRADIENT_NORM_FLOOR times the largest exact norm.
    """
    norms = {n: float(exact[n].double().norm()) for n in names}
    floor = max(GRADIENT_NORM_FLOOR * max(norms.values(), default=0.0), torch.finfo(torch.float64).tiny)
    errors = {n: float((approx[n].double() - exact[n].double()).norm()) / max(norms[n], floor)
              if approx[n].shape == exact[n].shape else float("inf") for n in names}
    worst = max(errors, key=errors.__getitem__)
    return errors[worst], worst


# The baseline's float64 gradients, computed once per baseline model and inputs: every candidate (and the plan) of a
# run is judged against the same ones.
_BASELINE_FLOAT64_GRADS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, dict[str, torch.Tensor] | None]] = \
    weakref.WeakKeyDictionary()


def _baseline_float64_grads(baseline: Workload) -> dict[str, torch.Tensor] | None:
    """``_float64_grads(baseline)``, remembered for the baseline's model object and inputs."""
    known = _BASELINE_FLOAT64_GRADS.get(baseline.model)
    if known is None or known[0] != id(baseline.inputs):
        known = _BASELINE_FLOAT64_GRADS[baseline.model] = (id(baseline.inputs), _float64_grads(baseline))
    return known[1]


def _float64_grads(workload: Workload) -> dict[str, torch.Tensor] | None:
    """The gradients of a first train step of the workload computed in float64; None where it cannot run so."""
    exact = workload.copy()
    try:
        exact.model.double()
        exact = replace(exact, inputs=map_tensors(exact.inputs, lambda t: t.double() if t.is_floating_point() else t))
        return _first_step(exact, exact)[1]
    except (RuntimeError, TypeError, NotImplementedError):  # an op without a float64 kernel
        return None


def _unwrapped(name: str, known: dict[str, torch.Tensor]) -> str:
    """``name`` without the ``model.`` prefixes that wrapper candidates add, when that names a known parameter."""
    while name not in known and name.startswith("model."):
        name = name[len("model."):]
    return name


def _first_step(workload: Workload, probe: Workload) -> tuple[Any, dict[str, torch.Tensor], float]:
    """A first forward of ``probe``, a fresh copy of ``workload`` (before any optimizer step): output, gradients in
    train mode, seconds.

    The random generators start from the same seed for every variant (and are put back after), so that dropout
    draws the same masks in baseline and candidate: otherwise train-mode outputs differ by the masks alone. A
    candidate under torch.compile draws them as eager mode does here (inductor's ``fallback_random``); its own
    generator would give other masks, and another training step.
    """
    from torch._inductor import config as inductor_config

    devices = [workload.device] if workload.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), inductor_config.patch(fallback_random=True):
        torch.manual_seed(FIRST_STEP_SEED)
        return _seeded_first_step(workload, probe)


def _seeded_first_step(workload: Workload, probe: Workload) -> tuple[Any, dict[str, torch.Tensor], float]:
    started = time.perf_counter()
    if workload.mode is not Mode.TRAIN:
        probe.model.eval()
        with torch.no_grad():
            output = call_model(probe.model, probe.inputs)
        synchronize(workload.device)
        return output, {}, time.perf_counter() - started
    probe.model.train()
    output = call_model(probe.model, probe.inputs)
    loss = training_loss(output)
    if loss.requires_grad:
        loss.backward()
    synchronize(workload.device)
    seconds = time.perf_counter() - started
    grads = {name: p.grad for name, p in probe.model.named_parameters() if p.grad is not None}
    return map_tensors(output, lambda t: t.detach()), grads, seconds


def warm_up(step: Callable[[], Any], workload: Workload, settings: BenchmarkSettings) -> int:
    """Run steps until the timings settle (allocator, oneDNN/cuDNN caches, lazy init); return how many ran."""
    times = [time_step(step, workload.device)]  # the first call (a compile, lazy set-up) is outside max_warmup_s
    started = time.perf_counter()
    while True:
        times.append(time_step(step, workload.device))
        elapsed = time.perf_counter() - started
        if elapsed >= settings.max_warmup_s:
            return len(times)
        if len(times) >= max(settings.warmup_steps, 6) and elapsed >= settings.warmup_s and _settled(times, settings):
            return len(times)


def _settled(times: list[float], settings: BenchmarkSettings) -> bool:
    recent, before = statistics.median(times[-3:]), statistics.median(times[-6:-3])
    return abs(recent - before) <= settings.settle_tolerance * before
