"""The A/B harness: the interval decides the verdict, outputs are compared, real timing finds a real slowdown."""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import replace

import pytest
import torch
from torch import nn

from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.measure import benchmark, comparison
from convdoctor.analyzer.measure.benchmark import (
    BenchmarkSettings,
    GradientReference,
    Numerics,
    Rounds,
    SpeedupEstimate,
    Verdict,
    between_blocks,
    compare_outputs,
    estimate_speedup,
    settled,
    student_t,
    undecided,
    worst_parameter_error,
)
from convdoctor.analyzer.measure.comparison import Comparison, measure
from convdoctor.analyzer.measure.results import off_prediction


def _noisy(center: float, spread: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def test_clear_speedup_is_faster_with_an_interval_above_one():
    estimate = estimate_speedup(_noisy(10e-3, 0.05, 30, 1), _noisy(5e-3, 0.05, 30, 2))
    assert estimate.verdict is Verdict.FASTER
    assert 1.0 < estimate.ci_low <= estimate.speedup <= estimate.ci_high
    assert 1.8 < estimate.speedup < 2.2
    assert estimate.baseline_ms > estimate.candidate_ms


def test_clear_slowdown_is_slower():
    estimate = estimate_speedup(_noisy(5e-3, 0.05, 30, 3), _noisy(10e-3, 0.05, 30, 4))
    assert estimate.verdict is Verdict.SLOWER and estimate.ci_high < 1.0


def test_same_distribution_is_no_measurable_difference():
    estimate = estimate_speedup(_noisy(10e-3, 0.2, 30, 5), _noisy(10e-3, 0.2, 30, 6))
    assert estimate.verdict is Verdict.NO_DIFFERENCE
    assert estimate.ci_low <= 1.0 <= estimate.ci_high


def test_a_difference_below_the_minimum_effect_is_no_measurable_difference():
    estimate = estimate_speedup([10.0e-3] * 20, [9.95e-3] * 20)  # 0.5% faster with no noise at all
    assert estimate.ci_low > 1.0 and estimate.verdict is Verdict.NO_DIFFERENCE


def test_blocks_that_disagree_widen_the_interval():
    """Three blocks of rounds, each tight, 10%, 5% and 0% faster: over rounds alone the interval is narrower than
    the blocks' spread and excludes 1.0; bootstrapped over blocks it holds their spread and says no difference."""
    baseline = [t for seed in (7, 8, 9) for t in _noisy(10e-3, 0.02, 10, seed)]
    candidate = [t for seed, speedup in ((10, 1.10), (11, 1.05), (12, 1.0))
                 for t in _noisy(10e-3 / speedup, 0.02, 10, seed)]
    pooled = estimate_speedup(baseline, candidate)
    blocked = estimate_speedup(baseline, candidate, blocks=[10, 10, 10])
    assert pooled.speedup == blocked.speedup  # the point estimate is the same ratio of medians
    assert pooled.verdict is Verdict.FASTER and pooled.ci_high - pooled.ci_low < 0.08
    assert blocked.verdict is Verdict.NO_DIFFERENCE and blocked.ci_low < 1.01 and blocked.ci_high > 1.08
    with pytest.raises(ValueError):
        estimate_speedup(baseline, candidate, blocks=[10, 10, 9])


def test_a_few_blocks_that_drift_get_the_t_interval_of_their_speedups():
    """Three tight blocks 4%, 6% and 8% faster: resampling three blocks reads their spread as all there is (the
    bootstrap's interval lies inside 1.04-1.08); as three samples of a drifting ratio, Student's t with two degrees
    of freedom puts it at 1.06 x/÷ exp(4.303 * s / sqrt(3)) - 1.011 to 1.111 - and the verdict follows it."""
    baseline = [10e-3] * 30
    candidate = [10e-3 / speedup for speedup in (1.04, 1.06, 1.08) for _ in range(10)]
    logs = [math.log(s) for s in (1.04, 1.06, 1.08)]
    half = 4.30265 * statistics.stdev(logs) / math.sqrt(3)
    estimate = estimate_speedup(baseline, candidate, blocks=[10, 10, 10])
    assert estimate.speedup == pytest.approx(1.06)
    assert estimate.ci_low == pytest.approx(1.06 / math.exp(half)) and estimate.ci_high == pytest.approx(
        1.06 * math.exp(half))
    assert estimate.ci_low < 1.02 and estimate.ci_high > 1.10 and estimate.verdict is Verdict.FASTER
    assert between_blocks(baseline, candidate, [10, 10, 10], 1.06) == (estimate.ci_low, estimate.ci_high)
    drifting = [10e-3 / speedup for speedup in (1.0, 1.03, 1.06) for _ in range(10)]
    assert estimate_speedup(baseline, drifting, blocks=[10, 10, 10]).verdict is Verdict.NO_DIFFERENCE
    assert estimate_speedup(baseline, drifting).verdict is Verdict.FASTER  # the rounds alone: 3% faster


@pytest.mark.parametrize(("freedom", "quantile"), [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (12, 2.179),
                                                    (20, 2.086), (30, 2.042), (120, 1.980), (10**6, 1.960)])
def test_student_t_quantiles(freedom: int, quantile: float):
    assert student_t(0.95, freedom) == pytest.approx(quantile, abs=1e-3)


@pytest.mark.parametrize(("freedom", "quantile"), [(1, 63.657), (2, 9.925), (3, 5.841), (5, 4.032), (100, 2.626)])
def test_student_t_at_other_confidences(freedom: int, quantile: float):
    """The 99% quantiles of the t tables: early stopping reads the blocks at EARLY_CONFIDENCE, not 95%."""
    assert student_t(0.99, freedom) == pytest.approx(quantile, abs=1e-3)


def test_compare_outputs_reports_abs_and_relative_error():
    base = (torch.tensor([1.0, -4.0]), torch.tensor([2, 3]))
    cand = (torch.tensor([1.5, -4.0]), torch.tensor([2, 3]))
    numerics = compare_outputs(base, cand)
    assert numerics.max_abs_error == 0.5
    assert numerics.max_rel_error == 0.5 / 4.0
    assert compare_outputs(base, (cand[0][:1], cand[1])).max_abs_error == float("inf")


class Sleepy(nn.Module):
    """A conv that also sleeps, so that a candidate is slower by a known amount."""

    def __init__(self, sleep_s: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.sleep_s = sleep_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep_s)
        return self.conv(x)


def test_measure_finds_a_real_slowdown_and_identical_outputs():
    torch.manual_seed(0)
    model, x = Sleepy(0.01), torch.randn(1, 3, 16, 16)
    baseline = workload_from(model, x, device="cpu")
    slower = baseline.copy()
    slower.model.sleep_s = 0.05
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                                 warmup_s=0.0, warmup_steps=2, min_rounds=8, max_rounds=12, target_s=0.1,
                                     early_stop=False)
    result = measure(baseline, slower, settings)
    assert result.estimate.verdict is Verdict.SLOWER
    assert result.estimate.ci_high < 0.8  # ~0.2 expected; loose enough for a busy 2-core machine
    assert result.numerics.max_abs_error == 0.0
    assert 8 <= result.rounds <= 12 and result.timer == "perf_counter"
    assert model.sleep_s == 0.01  # the user's model is untouched


class CopyDependent(Sleepy):
    """A candidate whose speed depends on the copy timed: copies alternate between sleeping 6 ms and 14 ms."""

    copies = 0

    def __deepcopy__(self, memo: dict[int, object]) -> "CopyDependent":
        import copy

        clone = CopyDependent.__new__(CopyDependent)
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        CopyDependent.copies += 1
        clone.sleep_s = 0.006 if CopyDependent.copies % 2 else 0.014
        return clone


def test_fresh_copies_per_block_put_the_spread_between_copies_in_the_interval():
    """One pair of copies measured alone says faster or slower, whichever copy it drew; three blocks on fresh
    copies see both and say no measurable difference."""
    x = torch.randn(1, 3, 16, 16)
    baseline = workload_from(Sleepy(0.01), x, device="cpu")
    candidate = workload_from(CopyDependent(0.01), x, device="cpu")
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                                 warmup_s=0.0, warmup_steps=1, max_warmup_s=0.5, min_rounds=6, max_rounds=6)
    one_pair = measure(baseline, candidate, replace(settings, blocks=1))
    assert one_pair.estimate.verdict is not Verdict.NO_DIFFERENCE and one_pair.blocks == 1
    blocks = measure(baseline, candidate, replace(settings, blocks=3))
    assert blocks.blocks == 3 and blocks.fresh_copies and blocks.rounds == 6
    assert blocks.estimate.verdict is Verdict.NO_DIFFERENCE
    # two copies of one speed and one of the other, whichever way round: the interval reaches past both sides
    assert blocks.estimate.ci_low < 0.8 and blocks.estimate.ci_high > 1.2


def test_a_variant_that_reuses_its_copy_is_copied_once_for_every_block():
    """A frozen compile's copy (``reuse_copy``) is compiled once: the copy whose first step the numerics check ran
    serves all blocks, where fresh copies take one per block; the baseline still gets a fresh copy per block."""
    x = torch.randn(1, 3, 16, 16)
    baseline = workload_from(CopyDependent(0.002), x, device="cpu")
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, early_stop=False, blocks=3,
                                 warmup_s=0.0, warmup_steps=1, max_warmup_s=0.2, min_rounds=6, max_rounds=6)
    for reuse in (False, True):
        candidate = replace(workload_from(CopyDependent(0.002), x, device="cpu"), reuse_copy=reuse)
        CopyDependent.copies = 0
        result = measure(baseline, candidate, settings)  # 3 blocks, fewer when other processes cut it short
        assert result.fresh_copies is not reuse
        # the baseline: 1 copy for the numerics, 1 for the peak memory and a fresh one per block; the candidate the
        # same, or only the numerics' copy, which also serves the peak memory
        assert CopyDependent.copies == 2 + result.blocks + (1 if reuse else 2 + result.blocks)


def test_the_blocks_of_one_comparison_start_block_spacing_s_apart():
    """Three blocks of a few milliseconds each: with 0.4 s spacing the measurement waits between them (two waits),
    without it the blocks run in a row."""
    x = torch.randn(1, 3, 16, 16)
    baseline, candidate = (workload_from(Sleepy(0.001), x, device="cpu") for _ in range(2))
    settings = BenchmarkSettings(block_spacing_s=0.4, extra_blocks=0, warmup_s=0.0, warmup_steps=1, max_warmup_s=0.5,
                                 min_rounds=3, max_rounds=3, blocks=3)
    started = time.perf_counter()
    spaced = measure(baseline, candidate, settings)
    spaced_s = time.perf_counter() - started
    started = time.perf_counter()
    in_a_row = measure(baseline, candidate, replace(settings, block_spacing_s=0.0))
    in_a_row_s = time.perf_counter() - started
    assert spaced.blocks == in_a_row.blocks == 3
    assert spaced_s >= 0.8 > in_a_row_s


@pytest.mark.parametrize(("speedup", "low", "high", "left_open"), [
    (1.04, 0.99, 1.09, True),  # a 4% change the interval cannot yet separate from none
    (0.96, 0.91, 1.005, True),
    (1.005, 0.97, 1.04, False),  # the median itself is inside 1 ± MIN_EFFECT: nothing to decide
    (1.04, 1.02, 1.06, False),  # decided: faster
    (1.008, 1.005, 1.011, False),  # decided: a difference below the minimum effect
])
def test_undecided_means_the_interval_reaches_into_the_band_and_its_median_does_not(
        speedup: float, low: float, high: float, left_open: bool):
    verdict = (Verdict.FASTER if low > 1.01 else Verdict.SLOWER if high < 0.99 else Verdict.NO_DIFFERENCE)
    assert undecided(SpeedupEstimate(10.0, 10.0 / speedup, speedup, low, high, verdict)) is left_open


@pytest.mark.parametrize("left_open", [True, False])
def test_a_change_left_open_gets_extra_blocks_once(monkeypatch: pytest.MonkeyPatch, left_open: bool):
    """The decision is read once, after the planned blocks, from all their rounds; the extra blocks are timed like
    the planned ones and counted in the measurement."""
    looks: list[int] = []

    def decision(estimate: SpeedupEstimate) -> bool:
        looks.append(1)
        return left_open

    monkeypatch.setattr(comparison, "undecided", decision)
    x = torch.randn(1, 3, 16, 16)
    baseline, candidate = (workload_from(Sleepy(0.001), x, device="cpu") for _ in range(2))
    settings = BenchmarkSettings(block_spacing_s=0, warmup_s=0.0, warmup_steps=1, max_warmup_s=0.5, min_rounds=6,
                                 max_rounds=6, blocks=3, extra_blocks=2)
    result = measure(baseline, candidate, settings)
    assert len(looks) == 1
    assert result.blocks == (5 if left_open else 3) and result.extra_blocks == (2 if left_open else 0)
    assert result.rounds == (10 if left_open else 6)  # two rounds a block, the extra ones too
    assert measure(baseline, candidate, replace(settings, extra_blocks=0)).blocks == 3 and len(looks) == 1


def test_train_mode_measures_forward_backward_and_step():
    torch.manual_seed(0)
    baseline = workload_from(nn.Conv2d(3, 4, 3), torch.randn(2, 3, 16, 16), device="cpu", mode="train")
    candidate = replace(baseline.copy())
    result = measure(baseline, candidate, BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                                                            warmup_s=0.0, min_rounds=4, max_rounds=4))
    assert result.rounds == 4
    assert result.numerics.max_abs_error == 0.0
    assert result.numerics.max_grad_abs_error == 0.0  # gradients of the first backward are compared too
    assert baseline.model.weight.grad is None  # measure() steps its own copies' optimizers, not this model's


def test_warm_up_runs_until_timings_settle():
    from convdoctor.analyzer.measure.benchmark import warm_up

    delays = iter([0.02] * 4 + [0.002] * 100)  # a slow start (caches, lazy init), then steady
    workload = workload_from(nn.Identity(), torch.zeros(1), device="cpu")
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0.0, warmup_steps=3)
    count = warm_up(lambda: time.sleep(next(delays)), workload, settings)
    # the 4 slow steps, then steady ones until the last 3 and the 3 before (at most one slow) agree
    assert 9 <= count <= 20
    steady = warm_up(lambda: time.sleep(0.002), workload, settings)
    assert 6 <= steady <= 20


def test_gradients_get_a_looser_tolerance_than_outputs():
    from convdoctor.analyzer.measure.results import GRADIENT_TOLERANCE_FACTOR, Numerics

    tolerance = 1e-4
    assert Numerics(0.0, 5e-5, 0.0, 7e-4).within(tolerance)  # channels_last training on small_cnn looks like this
    assert not Numerics(0.0, 5e-5, 0.0, tolerance * GRADIENT_TOLERANCE_FACTOR * 2).within(tolerance)
    assert not Numerics(0.0, 2e-4).within(tolerance)


def test_peak_memory_of_a_step_counts_its_activations():
    """A conv whose output is 4 MiB holds at least that at once; channels_last changes how, not whether."""
    import torch
    from torch import nn

    from convdoctor.analyzer.capture.workload import workload_from
    from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
    from convdoctor.analyzer.measure.comparison import measure
    from convdoctor.analyzer.measure.step_memory import step_peak_bytes

    output_bytes = 4 * 64 * 64 * 64 * 4
    workload = workload_from(nn.Conv2d(3, 64, 3, padding=1), torch.randn(4, 3, 64, 64), device="cpu")
    assert step_peak_bytes(workload) >= output_bytes
    wider = workload_from(nn.Conv2d(3, 128, 3, padding=1), torch.randn(4, 3, 64, 64), device="cpu")
    assert step_peak_bytes(wider) >= 2 * output_bytes
    quick = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                              warmup_s=0.0, warmup_steps=2, min_rounds=3, max_rounds=3, max_warmup_s=1.0)
    result = measure(workload, wider, quick)
    assert result.peak_bytes[0] < result.peak_bytes[1] and result.peak_memory


class _SteeperReLU(torch.autograd.Function):
    """ReLU forward, with a backward 2% steeper: the same outputs, another training step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * 1.02


class _SteeperReLUModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SteeperReLU.apply(x)


def _with_steeper_relus(workload):
    for module in list(workload.model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, _SteeperReLUModule())
    return workload


def test_gradients_summed_in_another_order_are_judged_against_float64():
    """channels_last training sums in another order and lands further from float64 than NCHW does; a float64 run of
    the candidate itself shows it is the same training step, so it passes. A candidate with the same outputs and
    another backward is caught by the same float64 run."""
    from conftest import EXAMPLES

    from convdoctor.analyzer.candidates.layout import to_channels_last
    from convdoctor.analyzer.capture.workload import load_workload
    from convdoctor.analyzer.measure.benchmark import compare_first_step
    from convdoctor.analyzer.measure.results import REFERENCE_FACTOR, SAME_STEP_TOLERANCE

    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu", mode="train")
    numerics, _ = compare_first_step(workload, to_channels_last(workload.copy()))
    reference = numerics.gradient_reference
    assert reference is not None and reference.worst_parameter in dict(workload.model.named_parameters())
    assert 0 < reference.baseline_error and 0 < reference.candidate_error < 0.1
    if reference.candidate_error > REFERENCE_FACTOR * reference.baseline_error:  # lands further: the float64 check
        assert reference.same_step is not None and reference.same_step <= SAME_STEP_TOLERANCE
        assert reference.rounding_only
    else:  # lands near (2x on this AVX2 CPU): within the factor, no float64 run of the candidate is needed
        assert reference.same_step is None
    assert numerics.within(1e-4)

    numerics, _ = compare_first_step(workload, _with_steeper_relus(workload.copy()))
    reference = numerics.gradient_reference
    assert numerics.max_rel_error == 0.0 and reference is not None  # the outputs alone would let it through
    assert reference.same_step is not None and reference.same_step > 1e-3 and not reference.rounding_only
    assert not numerics.within(1e-4)


@pytest.mark.parametrize("reference, passes", [
    (GradientReference(1e-5, 5e-4, "w"), True),  # within the gradient bound (1e-3) of float64
    (GradientReference(1e-3, 3e-3, "w"), True),  # no further than 4x the baseline's own error
    (GradientReference(1e-5, 0.05, "w"), False),  # far off, and not shown to be the same step
    (GradientReference(1e-5, 0.05, "w", same_step=1e-12), True),  # the same step: float32 rounding only
    (GradientReference(1e-5, 0.05, "w", same_step=1e-4), False),  # another step in float64
    (GradientReference(1e-5, 0.5, "w", same_step=1e-12), False),  # the same step, rounded beyond ROUNDING_LIMIT
])
def test_the_gradient_contract(reference: GradientReference, passes: bool):
    numerics = Numerics(0.0, 0.0, max_grad_abs_error=1.0, max_grad_rel_error=0.05, gradient_reference=reference)
    assert numerics.within(1e-4) is passes


def test_worst_parameter_error_floors_gradients_that_are_zero_up_to_rounding():
    exact = {"weight": torch.full((4,), 1.0), "bias": torch.full((4,), 1e-12)}
    approx = {"weight": torch.full((4,), 1.001), "bias": torch.full((4,), 2e-12)}
    error, name = worst_parameter_error(exact, approx, ["weight", "bias"])
    assert name == "weight" and error == pytest.approx(1e-3, rel=1e-3)  # the bias is 100% off, but of nothing
    assert worst_parameter_error(exact, {**approx, "bias": torch.ones(3)}, ["weight", "bias"]) == (float("inf"), "bias")


def test_dropout_draws_the_same_masks_in_both_first_steps():
    """In train mode a model with dropout gives the same outputs in baseline and an identical candidate."""
    from convdoctor.analyzer.capture.workload import workload_from
    from convdoctor.analyzer.measure.benchmark import compare_first_step

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 14 * 14, 4))
    workload = workload_from(model, torch.randn(2, 3, 16, 16), device="cpu", mode="train")
    before = torch.random.get_rng_state()
    numerics, _ = compare_first_step(workload, workload.copy())
    assert numerics.max_abs_error == 0.0 and numerics.max_grad_abs_error == 0.0
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's generator is put back


def test_a_compiled_candidate_draws_the_eager_dropout_masks():
    """torch.compile's own generator would draw other masks: outputs half different, another training step."""
    from convdoctor.analyzer.candidates.transforms import compiled
    from convdoctor.analyzer.measure.benchmark import compare_first_step

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 14 * 14, 4))
    workload = workload_from(model, torch.randn(2, 3, 16, 16), device="cpu", mode="train")
    numerics, _ = compare_first_step(workload, compiled(workload.copy()))
    assert numerics.max_rel_error < 1e-5 and numerics.within(1e-4), numerics


def _blocks_of(speedups: tuple[float, ...], rounds: int = 10) -> Rounds:
    """Tight blocks of rounds at the given speedups (the candidate's step is the baseline's over it)."""
    candidate = [10e-3 / s * (1 + 1e-4 * (i % 3)) for s in speedups for i in range(rounds)]
    return Rounds(times_s=([10e-3] * len(candidate), candidate), blocks=[rounds] * len(speedups))


def test_a_clear_change_settles_early_and_a_drifting_one_does_not():
    """Read at EARLY_CONFIDENCE over three blocks: 30% faster or slower throughout settles the comparison; blocks
    4%, 6% and 8% faster (a verdict at 95%, see above) do not, nor do ones around 1 that could still be faster."""
    assert settled(_blocks_of((1.30, 1.31, 1.29))) and settled(_blocks_of((0.70, 0.71, 0.69)))
    assert not settled(_blocks_of((1.04, 1.06, 1.08)))
    assert not settled(_blocks_of((0.99, 1.00, 1.01)))
    assert settled(_blocks_of((0.90, 0.91, 0.905)))  # clearly no faster: whatever more blocks say, no speedup


def test_a_settled_comparison_stops_after_the_fewest_blocks():
    """A candidate 3x slower (a real sleep) is settled after min_blocks, or a block later when the machine's noise
    widens the interval; --thorough's settings take every block."""
    baseline = workload_from(Sleepy(0.005), torch.randn(1, 3, 16, 16), device="cpu")
    slower = baseline.copy()
    slower.model.sleep_s = 0.015
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0.0, warmup_steps=2, min_rounds=24,
                                 max_rounds=24, blocks=6)
    fast = measure(baseline, slower, settings)
    assert 3 <= fast.blocks <= 4 and fast.stopped_early and fast.estimate.verdict is Verdict.SLOWER
    thorough = measure(baseline, slower, replace(settings, early_stop=False))
    assert thorough.blocks == 6 and not thorough.stopped_early and thorough.estimate.verdict is Verdict.SLOWER


def test_candidates_measured_together_each_stop_on_their_own():
    """One comparison, two candidates: one 3x slower settles after min_blocks and leaves the blocks; one whose copies
    alternate between faster and slower never settles and takes every block. While both took part, they were
    paired with the very same baseline steps."""
    x = torch.randn(1, 3, 16, 16)
    baseline = workload_from(Sleepy(0.01), x, device="cpu")
    slower = baseline.copy()
    slower.model.sleep_s = 0.03
    drifting = workload_from(CopyDependent(0.01), x, device="cpu")
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0.0, warmup_steps=1, max_warmup_s=0.3,
                                 min_rounds=24, max_rounds=24, blocks=6)
    shared = Comparison(baseline, settings)
    settling, open_ = shared.add(lambda: slower), shared.add(lambda: drifting)
    while shared.blocks_left:
        shared.run_block()
    assert 3 <= len(settling.blocks) <= 4 and settling.stopped_early
    assert len(open_.blocks) == 6 and not open_.stopped_early
    assert settling.times[0] == open_.times[0][:sum(settling.blocks)]
    assert shared.measurement(settling).estimate.verdict is Verdict.SLOWER
    assert shared.measurement(open_).blocks == 6


def test_a_measurement_far_from_its_prediction_is_told_apart():
    estimate = _blocks_of((1.15, 1.17, 1.16, 1.15, 1.17, 1.16)).estimate()
    saving = 1 - 1 / estimate.speedup  # about 14%
    assert off_prediction(estimate, saving * 3) and off_prediction(estimate, saving / 3)
    assert not off_prediction(estimate, saving * 1.5) and not off_prediction(estimate, None)
    assert not off_prediction(replace(estimate, verdict=Verdict.UNRELIABLE), saving * 3)


def test_rounds_in_worker_processes_stop_at_their_budget_once_past_the_minimum_blocks():
    """alternating_rounds (process settings, throughput sweeps) keeps the default mode's per-candidate budget: a
    pair whose times never settle a verdict (the same sleep, jittered) stops at ``min_blocks`` when its budget is
    spent, and takes every block without one."""
    jitter = random.Random(1)

    def sleep_one(_which: int) -> float:
        duration = 0.002 * (1 + jitter.random())
        time.sleep(duration)
        return duration

    settings = BenchmarkSettings(blocks=6, min_blocks=3, min_rounds=12, max_rounds=12, target_s=0.0, budget_s=0.0)
    budgeted = benchmark.alternating_rounds(sleep_one, settings)
    assert len(budgeted.blocks) == 3 and budgeted.stopped_early
    unbudgeted = benchmark.alternating_rounds(sleep_one, replace(settings, budget_s=None))
    assert len(unbudgeted.blocks) == 6 and not unbudgeted.stopped_early
