"""What a model costs to run and to store: FLOPs of one forward (FlopCounterMode) and parameter count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a model is measured: reports read these records without it
    from convdoctor.analyzer.capture.workload import Workload


@dataclass(frozen=True)
class ModelCost:
    """FLOPs of one forward on the workload's inputs, and the number of parameters."""

    flops: int
    params: int


@dataclass(frozen=True)
class ArchitectureDelta:
    """How an architecture change alters the model's cost; it also needs retraining."""

    before: ModelCost
    after: ModelCost

    @property
    def flops_ratio(self) -> float:
        return self.after.flops / self.before.flops if self.before.flops else float("nan")

    @property
    def params_ratio(self) -> float:
        return self.after.params / self.before.params if self.before.params else float("nan")


def model_cost(workload: Workload) -> ModelCost:
    """Count the FLOPs of one forward on a copy of the workload (no_grad), and its parameters."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from convdoctor.analyzer.capture.workload import call_model

    probe = workload.copy()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        call_model(probe.model, probe.inputs)
    return ModelCost(flops=int(counter.get_total_flops()), params=sum(p.numel() for p in probe.model.parameters()))
