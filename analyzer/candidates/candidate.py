"""What a fix is: a transform of a copy of the workload, what it promises about numerics, and where it goes in a
plan. Rules build candidates; measuring applies them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from convdoctor.analyzer.capture.workload import Workload


class NumericsContract(str, enum.Enum):
    """What a candidate promises about the model's outputs."""

    EXACT = "exact"  # same math; only rounding may differ within the tolerance
    APPROXIMATE = "approximate"  # e.g. lower precision: error reported against the tolerance
    ARCHITECTURE = "architecture change"  # a different model: needs retraining, FLOPs/params reported


class PlanStage(enum.IntEnum):
    """Where a candidate goes when several are combined: module surgery first, wrappers around the model last."""

    STRUCTURE = 0  # replaces or folds modules (conv-bn folding)
    LAYOUT = 1  # changes tensors in place (memory format)
    WRAPPER = 2  # wraps the whole model (autocast, thread count, backend switches)
    # Compiles the whole model, wrappers included: outermost, so that autocast runs inside the compiled graph (its
    # weight casts folded by freezing, the output cast fused). torch 2.13 on a CPU compiles both orders; with autocast
    # outside, the compiled graph's output is cast back eagerly (aten::_to_copy) on each call.
    COMPILER = 3


@dataclass(frozen=True)
class LayerTrial:
    """One layer of a candidate measured on its own: the layer's module alone, on random inputs of the shape the
    trace recorded for it, before and after ``transform`` (which sees the layer as the whole model, ``<model>``)."""

    layer: str  # qualified module name in the workload's model
    input_shape: tuple[int, ...]
    transform: Callable[[Workload], Workload]


@dataclass(frozen=True)
class Candidate:
    """A transform of a copy of the workload that a finding proposes, and what it promises about numerics."""

    title: str
    transform: Callable[[Workload], Workload]
    numerics: NumericsContract
    tolerance: float = 0.0  # max relative error of outputs that still counts as the same model (unused for
    # an architecture change, whose outputs are not compared)
    stage: PlanStage = PlanStage.LAYOUT  # where it goes in a combined plan
    layer_trials: tuple[LayerTrial, ...] = ()  # layers also measured alone, beside the whole model
    # Set for a change of how the process starts (allocator variables, LD_PRELOAD): the transform is then the
    # identity, the candidate is measured in pairs of worker processes (analyzer/environment_trial.py), never in a plan.
    process_environment: dict[str, str] | None = None
    # Rules whose candidates this one's transform already includes, and how: a plan with it does not add theirs
    # (inductor freezing folds each BatchNorm into its conv, as CD109's candidate does).
    covers: tuple[tuple[str, str], ...] = ()  # (rule id, how)


@dataclass(frozen=True)
class LargerBatches:
    """A finding's proposal to run the workload at larger batch sizes, measured in samples/s (not step time).

    It changes the workload, not the model, so it is never a plan step. The pipeline builds the inputs with the
    model file's ``get_inputs(batch_size)``; without it the proposal is reported unmeasured, saying how to enable it.
    """

    factors: tuple[int, ...] = (2, 4, 8, 16)  # multiples of the workload's batch, tried in growing order
    budget_s: float = 60.0  # seconds for the whole sweep


def combine(candidates: list[Candidate]) -> Candidate:
    """One candidate that applies all of them, module surgery first and model wrappers last.

    Errors of approximate candidates can add up, so the combined tolerance is the sum of theirs.
    """
    ordered = sorted(candidates, key=lambda c: c.stage)  # stable: same-stage candidates keep their order

    def transform(workload: Workload) -> Workload:
        for candidate in ordered:
            workload = candidate.transform(workload)
        return workload

    approximate = any(c.numerics is not NumericsContract.EXACT for c in ordered)
    return Candidate(
        title=" + ".join(c.title for c in ordered),
        transform=transform,
        numerics=NumericsContract.APPROXIMATE if approximate else NumericsContract.EXACT,
        tolerance=sum(c.tolerance for c in ordered),
        stage=max(c.stage for c in ordered),
    )
