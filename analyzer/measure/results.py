"""What measuring gives: speedup estimates with their verdicts, numerics, and throughput at other batch sizes.

Plain records, without torch, so that reports can be read and written where torch is not imported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from convdoctor.analyzer.measure.model_cost import ArchitectureDelta

if TYPE_CHECKING:
    from convdoctor.analyzer.candidates.candidate import Candidate, LargerBatches

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
# Differences smaller than this are below what timer jitter, frequency scaling and allocator state let one
# process tell apart: an interval inside 1 ± MIN_EFFECT is "no measurable difference", as is one covering 1.0.
MIN_EFFECT = 0.01
# Weight gradients sum over the batch and every output position, so reordered float sums (another layout,
# another kernel) move them more than the outputs: they are held to this many times the output tolerance.
GRADIENT_TOLERANCE_FACTOR = 10.0
# Gradients further apart than this (relative) are also compared with a float64 run of the baseline, the exact
# answer both float32 runs approximate, parameter by parameter (see GradientReference): a candidate that sums in
# another order (channels_last, fused kernels) passes when its gradients are within the gradient bound of float64,
# or no further from it than REFERENCE_FACTOR times the baseline's own, or when a float64 run of the candidate
# itself gives the baseline's float64 gradients (the same step: what is left is float32 rounding).
GRADIENT_REFERENCE_FLOOR = 1e-5
REFERENCE_FACTOR = 4.0  # float32 sums in another order land a few times further or nearer: same order
# A parameter whose exact gradient is below this share of the largest parameter's (gradient norms) is measured
# against that share: its gradient is zero up to rounding (a bias before BatchNorm), so any error is infinitely
# "relative" to it.
GRADIENT_NORM_FLOOR = 1e-3
SAME_STEP_TOLERANCE = 1e-8  # float64 runs of baseline and candidate this close compute the same training step…
# …and then float32 rounding up to this far (a BatchNorm network's backward amplifies it: oneDNN's channels_last
# training step of mobilenet_v2 lands 3e-2 from float64, NCHW 7e-3) is let through; beyond it, not the same step.
ROUNDING_LIMIT = 0.1
FIRST_STEP_SEED = 0  # every variant's first step draws the same random numbers (dropout masks)
# Early stopping (BenchmarkSettings.early_stop) reads the blocks so far at this confidence: with a verdict read at
# up to four looks (3-6 blocks), a constant boundary this much stricter than CONFIDENCE keeps the chance of a
# false verdict over all looks near 1 - CONFIDENCE (Pocock's boundary for four looks: 0.018 per look for 0.05).
EARLY_CONFIDENCE = 0.982
# A measurement whose savings stay more than this factor from the rule's prediction gets a second look, and is
# flagged beside its figure when it still does.
PREDICTION_FACTOR = 2.0
# An early verdict also needs an interval this narrow (high / low), so that the candidates it ranks are apart.
EARLY_WIDTH = 1.25


class Verdict(str, enum.Enum):
    """What an interval of speedups says."""

    FASTER = "faster"
    SLOWER = "slower"
    NO_DIFFERENCE = "no measurable difference"
    UNRELIABLE = "unreliable"  # other processes kept the benchmark's cores busy: no verdict (contention.py)


@dataclass(frozen=True)
class BenchmarkSettings:
    """How long to warm up and how many interleaved rounds to time."""

    warmup_s: float = 0.5  # per variant: warm up at least this long and at least warmup_steps steps…
    warmup_steps: int = 3
    settle_tolerance: float = 0.05  # …then until the median of the last 3 steps is within 5% of the 3 before
    max_warmup_s: float = 10.0  # per variant, whether or not the timings settled
    # In-process blocks (``comparison.Comparison``): the steps a fresh copy runs before timing. Every variant there ran
    # its first step in the process already, and later steps of a fresh copy showed no trend beyond the noise; the
    # blocks' spread comes from the machine's drift between blocks, not from the steps within them (3-block
    # ResNet-18 intervals were no narrower with 4 rounds a block than with 2), so a block's time goes to more blocks.
    copy_warmup_steps: int = 1
    min_rounds: int = 10
    # 20 rounds a block at most: with 10, a fast model's block median carried about as much noise as the drift
    # between blocks (benchmarks/INTERVALS.md), and the blocks' t interval took both
    max_rounds: int = 120
    target_s: float = 6.0  # total timed time across both variants, once min_rounds are done
    # The rounds are taken in this many blocks, each (in one process) on fresh copies of both variants: one pair of
    # copies timed once differs from the next pair, and from itself a minute later, by more than its rounds' noise
    # (memory placement, allocator and machine state), so the interval is taken over blocks as well as rounds
    # (``benchmark.estimate_speedup``). Six, not three: the blocks' t interval with 5 degrees of freedom is 2.4
    # times narrower than with 2 for the same spread. min_rounds, max_rounds and target_s are totals over the blocks.
    blocks: int = 6
    # A comparison's block starts at least this long after its previous one started (``comparison.Comparison``):
    # the ratio of two variants drifts with the machine's state, and blocks 0.5 s apart correlate about 0.5, 5-7 s
    # apart hardly at all (benchmarks/INTERVALS.md). A shorter block takes more rounds rather than wait idle.
    block_spacing_s: float = 5.0
    # A second look, once: when the blocks leave a change open (``benchmark.undecided``: the interval reaches into
    # 1 ± MIN_EFFECT, its median lies outside it), this many more blocks are taken and the verdict is read from all
    # of them. From recorded series (benchmarks/INTERVALS.md): a real 4% slowdown got a verdict in 14-21% of
    # six-block measurements and 33-44% with the second look; a copy timed against itself got none either way.
    extra_blocks: int = 6
    # Fast by default: once ``min_blocks`` or more are in, a comparison stops as soon as its verdict is settled
    # (``benchmark.settled``: decided at EARLY_CONFIDENCE and narrow enough to rank, or clearly no faster).
    # ``--thorough`` takes every planned block.
    early_stop: bool = True
    min_blocks: int = 3
    # With early_stop, a comparison past min_blocks also stops once its own blocks (warm-ups included) have taken
    # this long, settled or not: its interval, wider, says what it could tell. None: no limit.
    budget_s: float | None = None


@dataclass(frozen=True)
class SpeedupEstimate:
    """Median times of two variants and the bootstrap interval of their ratio."""

    baseline_ms: float
    candidate_ms: float
    speedup: float  # baseline / candidate: above 1 means the candidate is faster
    ci_low: float
    ci_high: float
    verdict: Verdict


@dataclass(frozen=True)
class Numerics:
    """How far the candidate's outputs are from the baseline's on the same inputs."""

    max_abs_error: float
    max_rel_error: float  # max abs error over the largest baseline magnitude
    max_grad_abs_error: float | None = None  # train mode: parameter gradients of the first backward
    max_grad_rel_error: float | None = None
    # the gradients against float64 runs; None when the float32 gradients agree within GRADIENT_REFERENCE_FLOOR or
    # the float64 run could not be made
    gradient_reference: GradientReference | None = None

    def within(self, tolerance: float) -> bool:
        """Outputs within ``tolerance`` (relative); gradients within GRADIENT_TOLERANCE_FACTOR times it of the
        baseline's, or passing against float64 (``GradientReference.passes``)."""
        bound = tolerance * GRADIENT_TOLERANCE_FACTOR
        grads_ok = self.max_grad_rel_error is None or self.max_grad_rel_error <= bound
        if not grads_ok and self.gradient_reference is not None:
            grads_ok = self.gradient_reference.passes(bound)
        return self.max_rel_error <= tolerance and grads_ok


@dataclass(frozen=True)
class GradientReference:
    """Train-mode gradients against float64 runs, parameter by parameter.

    Each error is the norm of a parameter's gradient difference over the norm of its float64 gradient (floored at
    GRADIENT_NORM_FLOOR of the largest), and the worst parameter counts.
    """

    baseline_error: float  # the float32 baseline against the float64 baseline
    candidate_error: float  # the float32 candidate against the float64 baseline
    worst_parameter: str  # where the candidate's error is largest
    same_step: float | None = None  # the float64 candidate against the float64 baseline; None when not run

    @property
    def rounding_only(self) -> bool:
        """The float64 runs agree: the candidate computes the same training step, and differs by rounding."""
        return self.same_step is not None and self.same_step <= SAME_STEP_TOLERANCE

    def passes(self, bound: float) -> bool:
        """Within ``bound`` of float64, or REFERENCE_FACTOR times the baseline's error, or rounding only (up to
        ROUNDING_LIMIT)."""
        if self.candidate_error <= max(REFERENCE_FACTOR * self.baseline_error, bound):
            return True
        return self.rounding_only and self.candidate_error <= ROUNDING_LIMIT


def off_prediction(estimate: SpeedupEstimate, predicted_saving: float | None) -> bool:
    """Whether a measured interval and a predicted saving (a share of the step) disagree by more than
    PREDICTION_FACTOR: the interval's savings all above PREDICTION_FACTOR times the prediction, or all below its
    1 / PREDICTION_FACTOR. No prediction, or one of no saving, disagrees with nothing."""
    if predicted_saving is None or predicted_saving <= 0 or estimate.verdict is Verdict.UNRELIABLE:
        return False
    low, high = 1.0 - 1.0 / estimate.ci_low, 1.0 - 1.0 / estimate.ci_high
    return high < predicted_saving / PREDICTION_FACTOR or low > predicted_saving * PREDICTION_FACTOR


@dataclass(frozen=True)
class Contention:
    """Other processes' load over a measurement's blocks of rounds (``contention.QuietPolicy``)."""

    contended_blocks: int = 0  # kept although other processes kept the benchmark's cores busy: no verdict
    redone_blocks: int = 0  # taken under contention, and taken again after a wait for quiet
    busiest: str | None = None  # what kept the cores busy (``contention.MachineReading.describe``)


@dataclass(frozen=True)
class Measurement:
    """The measured result of one candidate against the baseline."""

    estimate: SpeedupEstimate
    numerics: Numerics | None  # None where outputs are not compared (a throughput point: other batch shapes)
    rounds: int
    warmup_steps: tuple[int, int]  # (baseline, candidate): steps run before timing, every block's together
    first_step_s: tuple[float, float] | None  # (baseline, candidate): the very first call, compilation and lazy init
    # included; None where not timed (a throughput point)
    threads: int
    device: str
    timer: str
    other_cores_busy: float | None = None  # CPU cores other processes kept busy, on average, during the rounds
    blocks: int = 1  # blocks the rounds were taken in (BenchmarkSettings.blocks)
    extra_blocks: int = 0  # of ``blocks``, those of a second look (BenchmarkSettings.extra_blocks)
    stopped_early: bool = False  # settled before its planned blocks (BenchmarkSettings.early_stop)
    contention: Contention = field(default_factory=Contention)
    fresh_copies: bool = False  # whether each block timed fresh copies of both variants
    peak_bytes: tuple[int | None, int | None] = (None, None)  # (baseline, candidate), in the sense of peak_memory
    peak_memory: str | None = None  # what peak_bytes measures (step_memory.PEAK_TENSOR_MEMORY, or a process's RSS)

    @property
    def saving(self) -> float:
        """The fraction of step time the candidate saves: 1 - candidate/baseline."""
        return 1.0 - 1.0 / self.estimate.speedup

    @property
    def reliable(self) -> bool:
        """No kept block was taken while other processes kept the benchmark's cores busy."""
        return self.contention.contended_blocks == 0


@dataclass(frozen=True)
class ThroughputPoint:
    """Samples per second of the workload at another batch size against its own batch, measured interleaved:
    a Measurement of per-sample times (its speedup is the throughput ratio candidate / baseline, its
    ``baseline_ms``/``candidate_ms`` are milliseconds per sample; outputs of other shapes are not compared)."""

    baseline_batch: int
    batch_size: int
    measurement: Measurement

    @property
    def estimate(self) -> SpeedupEstimate:
        return self.measurement.estimate

    @property
    def baseline_samples_per_s(self) -> float:
        return 1e3 / self.estimate.baseline_ms

    @property
    def samples_per_s(self) -> float:
        return 1e3 / self.estimate.candidate_ms


@dataclass(frozen=True)
class BatchSweep:
    """The measured throughput of each batch size tried, the best one, and why the sweep stopped."""

    baseline_batch: int
    points: list[ThroughputPoint]  # in the order tried, growing batch sizes
    stopped: str  # why no larger batch was tried

    @property
    def best(self) -> ThroughputPoint | None:
        """The batch with the highest measured throughput among those measurably faster than the baseline."""
        faster = [p for p in self.points if p.estimate.verdict is Verdict.FASTER]
        return max(faster, key=lambda p: p.estimate.speedup, default=None)


class Proposal(Protocol):
    """What measuring reads of a finding (``rules.base.Finding`` is one): the fix it proposes and its estimate."""

    rule_id: str
    rule_name: str
    estimated_saving: float | None

    @property
    def predicted_saving(self) -> float | None: ...  # the estimate, when it predicts the fix's whole effect

    candidate: Candidate | None
    larger_batches: LargerBatches | None


@dataclass
class FindingOutcome:
    """A finding with what happened when its candidate was tried."""

    finding: Proposal
    measurement: Measurement | None = None
    not_measured: str | None = None  # why there is no measurement (off, no candidate, the candidate failed)
    numerics_ok: bool | None = None  # the candidate's output error within its declared tolerance
    architecture: ArchitectureDelta | None = None  # for an architecture change: FLOPs and params, before and after
    same_candidate_as: str | None = None  # the rule whose identical candidate this measurement was taken for
    throughput: BatchSweep | None = None  # for a larger-batch proposal: samples/s at each batch size tried
    layer_measurements: list[LayerMeasurement] = field(default_factory=list)  # the candidate's layer trials
    off_prediction: bool = False  # the measured saving stayed over PREDICTION_FACTOR from the prediction


@dataclass(frozen=True)
class LayerMeasurement:
    """One layer alone, before and after the candidate's change, on random inputs of its recorded shape."""

    layer: str
    input_shape: tuple[int, ...]
    measurement: Measurement | None
    not_measured: str | None = None  # why not (the layer trial failed)
    numerics_ok: bool | None = None  # the layer's outputs within the candidate's tolerance


@dataclass
class Plan:
    """The accepted fixes (faster, numerics within tolerance, no retraining) applied together and measured as one."""

    steps: list[FindingOutcome]  # ranked by their own measured speedup
    measurement: Measurement  # numerics within the combined tolerance: a step that breaks it is left out
    tolerance: float
    left_out: list[LeftOut] = field(default_factory=list)  # accepted alone, but the plan was not faster with them


@dataclass(frozen=True)
class LeftOut:
    """An accepted fix the plan measured without: with it, the plan failed, lost numerics, or was not faster; or one
    a plan step already does (``Candidate.covers``, not measured)."""

    outcome: FindingOutcome
    measurement: Measurement | None  # the plan with it, against the baseline; None when it failed
    reason: str
