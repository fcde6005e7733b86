"""The job as a whole from the traces of its ranks: communication per rank, stragglers per step, and conv layers
side by side.

A rank's *work* in a step is the step less its exposed communication (see ``communication``): with DDP every rank
waits for the slowest in the gradient allreduce, so step times are alike, and the slow rank is the one that works
longer while the others wait.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Protocol, Sequence

from convdoctor.analyzer.conv.communication import CommView
from convdoctor.analyzer.trace.profile import Profile


class TimedLayer(Protocol):
    """What the job view reads of a conv layer."""

    @property
    def name(self) -> str: ...

    @property
    def time_per_step_us(self) -> float: ...


class RankAnalysis(Protocol):
    """What the job view reads of one rank's analysis (a ``RankAnalysis``; named here so that the analysis, which
    carries its job view, and the job view, built from the ranks' analyses, do not import each other)."""

    @property
    def profile(self) -> Profile: ...

    @property
    def layers(self) -> Sequence[TimedLayer]: ...

    @property
    def communication(self) -> CommView | None: ...

    @property
    def conv_time_us(self) -> float: ...

NOISE_FRACTION = 0.05  # a difference in work below 5% of the step is within run-to-run noise on a shared machine
NOISE_FLOOR_US = 1000.0  # …and so is one below 1 ms
LAYER_DIFFERENCE = 1.25  # ranks' times of a layer differing by more than this factor are shown side by side
LAYER_FLOOR_US = 1000.0  # …when the difference is also above this (1 ms: below, noise on a shared machine)


@dataclass(frozen=True)
class RankSummary:
    """One rank's mean profiled step."""

    rank: int
    trace: str
    step_us: float
    comm_us: float
    overlap_us: float
    compute_us: float
    work_us: float
    allreduce_calls: float
    conv_us: float

    @property
    def exposed_comm_us(self) -> float:
        return self.comm_us - self.overlap_us

    @property
    def comm_share(self) -> float:
        return self.comm_us / self.step_us if self.step_us > 0 else 0.0

    @property
    def overlap_fraction(self) -> float:
        return self.overlap_us / self.comm_us if self.comm_us > 0 else 0.0


@dataclass(frozen=True)
class StepComparison:
    """One step across ranks: who worked longest, and by how much more than the median of the others."""

    number: int
    work_us: list[float]  # by rank, in the job's rank order
    slowest_rank: int  # the position of the slowest rank in that order
    excess_us: float
    slowest_rank_id: int | None = None  # its rank as its trace says it (JobView.ranks[...].rank)

    @property
    def slowest_rank_reported(self) -> int:
        """The slowest rank as the reports name it: its rank as its trace says it, else its position."""
        return self.slowest_rank if self.slowest_rank_id is None else self.slowest_rank_id

    @property
    def excess_fraction(self) -> float:
        others = [w for r, w in enumerate(self.work_us) if r != self.slowest_rank]
        base = statistics.median(others)
        return self.excess_us / base if base > 0 else 0.0


@dataclass(frozen=True)
class Straggler:
    """A rank that was the slowest in every step, with where its extra time went."""

    rank: int
    steps: int
    excess_us: float  # mean over steps
    excess_low_us: float  # smallest and largest over steps: the interval of the difference
    excess_high_us: float
    excess_fraction: float
    extra_compute_us: float  # of the excess: in its operators
    extra_untraced_us: float  # of the excess: outside any operator (Python, data loading, sleeping, I/O)
    decided: bool  # the smallest excess is above the noise threshold

    @property
    def own_cause(self) -> str:
        """Where the straggler's extra time went."""
        if self.extra_untraced_us >= self.extra_compute_us:
            return "outside any operator (Python, data loading, sleeping or I/O in its step)"
        return "in its operators (more work or a slower device on this rank)"


@dataclass(frozen=True)
class LayerAcrossRanks:
    """A conv layer's time per step on each rank (None where a rank's trace does not have it)."""

    name: str
    time_us: list[float | None]


@dataclass(frozen=True)
class JobView:
    """What the traces of all ranks of one job say together."""

    world_size: int
    backend: str
    time_basis: str
    ranks: list[RankSummary]
    steps: list[StepComparison]
    straggler: Straggler | None  # None when no rank was the slowest in every step
    verdict: str  # one line: the straggler, or why none was named, and whether communication is the job's cost
    layers: list[LayerAcrossRanks]
    layers_differ: bool

    @property
    def comm_share(self) -> float:
        """Mean share of the step in communication over ranks."""
        return statistics.mean(r.comm_share for r in self.ranks)

    @property
    def overlap_fraction(self) -> float:
        comm = sum(r.comm_us for r in self.ranks)
        return sum(r.overlap_us for r in self.ranks) / comm if comm > 0 else 0.0


def job_view(analyses: Sequence[RankAnalysis]) -> JobView | None:
    """The job view of the ranks' analyses (in rank order); None unless every rank's trace has communication."""
    views = [a.communication for a in analyses]
    if len(analyses) < 2 or any(v is None for v in views):
        return None
    comms: list[CommView] = [v for v in views if v is not None]
    ids = rank_ids([analysis.profile for analysis in analyses])
    ranks = [_summary(rank, analysis, view) for rank, analysis, view in zip(ids, analyses, comms)]
    steps = _compare_steps(comms, ids)
    straggler = _straggler(steps, comms, ids)
    info = analyses[0].profile.metadata.get("distributedInfo")
    backend = str(info.get("backend", "unknown")) if isinstance(info, dict) else "unknown"
    layers = _layers(analyses)
    return JobView(
        world_size=len(analyses), backend=backend, time_basis=comms[0].time_basis, ranks=ranks, steps=steps,
        straggler=straggler, verdict=_verdict(straggler, steps, ranks), layers=layers,
        layers_differ=any(_differs(layer) for layer in layers),
    )


def trace_rank(profile: Profile) -> int | None:
    """The rank a trace says it is: Kineto's ``distributedInfo.rank``, else the one convdoctor recorded; None."""
    info = profile.metadata.get("distributedInfo")
    for value in (info.get("rank") if isinstance(info, dict) else None, profile.environment.rank):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def rank_ids(profiles: Sequence[Profile]) -> list[int]:
    """Each trace's rank as its trace says it (``trace_rank``), when every trace says one and no two the same;
    else their positions (0, 1, ...), the order the caller sorted them in."""
    ranks = [trace_rank(profile) for profile in profiles]
    if None in ranks or len(set(ranks)) != len(ranks):
        return list(range(len(profiles)))
    return [rank for rank in ranks if rank is not None]


def _summary(rank: int, analysis: RankAnalysis, view: CommView) -> RankSummary:
    return RankSummary(
        rank=rank, trace=analysis.profile.trace_path, step_us=view.mean("step_us"), comm_us=view.mean("comm_us"),
        overlap_us=view.mean("overlap_us"), compute_us=view.mean("compute_us"), work_us=view.mean("work_us"),
        allreduce_calls=view.mean("allreduce_calls"), conv_us=analysis.conv_time_us,
    )


def _compare_steps(views: list[CommView], ids: list[int]) -> list[StepComparison]:
    by_rank = [{s.number: s for s in view.steps} for view in views]
    shared = sorted(set.intersection(*(set(steps) for steps in by_rank)))
    comparisons = []
    for number in shared:
        work = [steps[number].work_us for steps in by_rank]
        slowest = max(range(len(work)), key=lambda r: work[r])
        others = [w for r, w in enumerate(work) if r != slowest]
        comparisons.append(StepComparison(number, work, slowest, work[slowest] - statistics.median(others),
                                          ids[slowest]))
    return comparisons


def _straggler(steps: list[StepComparison], views: list[CommView], ids: list[int]) -> Straggler | None:
    if not steps or len({s.slowest_rank for s in steps}) != 1:
        return None
    rank = steps[0].slowest_rank
    step_us = statistics.mean(view.mean("step_us") for view in views)
    by_rank = [{s.number: s for s in view.steps} for view in views]
    extra_compute = statistics.mean(
        by_rank[rank][s.number].compute_us
        - statistics.median(by_rank[r][s.number].compute_us for r in range(len(views)) if r != rank)
        for s in steps)
    excess = statistics.mean(s.excess_us for s in steps)
    low = min(s.excess_us for s in steps)
    return Straggler(
        rank=ids[rank], steps=len(steps), excess_us=excess, excess_low_us=low,
        excess_high_us=max(s.excess_us for s in steps),
        excess_fraction=statistics.mean(s.excess_fraction for s in steps),
        extra_compute_us=max(0.0, extra_compute), extra_untraced_us=max(0.0, excess - max(0.0, extra_compute)),
        decided=len(steps) >= 2 and low > max(NOISE_FRACTION * step_us, NOISE_FLOOR_US),
    )


def _verdict(straggler: Straggler | None, steps: list[StepComparison], ranks: list[RankSummary]) -> str:
    if straggler is not None and straggler.decided:
        return (f"rank {straggler.rank} is the straggler: it worked {straggler.excess_us / 1e3:.1f} ms "
                f"(+{straggler.excess_fraction:.0%}) longer than the others in each of {straggler.steps} steps "
                f"({straggler.excess_low_us / 1e3:.1f} to {straggler.excess_high_us / 1e3:.1f} ms); its extra time "
                f"is {straggler.own_cause}, its own, not the job's")
    if straggler is not None:
        return (f"rank {straggler.rank} was the slowest in each of {straggler.steps} steps, but by "
                f"{straggler.excess_low_us / 1e3:.1f} to {straggler.excess_high_us / 1e3:.1f} ms: too close to the "
                "noise (5% of a step, 1 ms) or too few steps to name a straggler; profile more --steps")
    if not steps:
        return "the ranks' traces share no profiled step: no straggler can be named"
    exposed = statistics.mean(r.exposed_comm_us / r.step_us for r in ranks if r.step_us > 0)
    return (f"no straggler: the slowest rank changes between steps; the job's own cost is communication that "
            f"overlaps no compute, {exposed:.0%} of a step")


def _layers(analyses: Sequence[RankAnalysis]) -> list[LayerAcrossRanks]:
    names = list(dict.fromkeys(layer.name for analysis in analyses for layer in analysis.layers))
    by_rank = [{layer.name: layer.time_per_step_us for layer in analysis.layers} for analysis in analyses]
    return [LayerAcrossRanks(name, [times.get(name) for times in by_rank]) for name in names]


def _differs(layer: LayerAcrossRanks) -> bool:
    if any(t is None for t in layer.time_us):
        return True
    times = [t for t in layer.time_us if t is not None]
    low, high = min(times), max(times)
    return high - low > LAYER_FLOOR_US and (low <= 0 or high / low > LAYER_DIFFERENCE)
