"""Everything `convdoctor profile` can be told, as one value the CLI and the Python API build."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from convdoctor.analyzer.measure.phase import MeasuringOptions
from convdoctor.analyzer.measure.results import BenchmarkSettings


@dataclass(frozen=True)
class ProfileOptions:
    """Everything `convdoctor profile` can be told."""

    device: str = "auto"
    mode: str = "eval"
    batch_size: int | None = None
    steps: int = 3
    out_dir: Path | None = None  # default: convdoctor-out/<model name>
    measure: bool = True
    time_budget_s: float | None = None  # for the whole measuring phase; None: measure every candidate
    timeout_s: float | None = 300.0  # loading the model file, its first step, the capture, one candidate's trial
    nproc: int = 1  # above 1: a data-parallel job of this many workers (DDP under PyTorch's elastic launcher)
    backend: str | None = None  # the job's process-group backend; None: nccl on CUDA, gloo on the CPU
    select: tuple[str, ...] = ()  # rule ids/prefixes/names to run (all when empty)
    ignore: tuple[str, ...] = ()
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)

    @property
    def measuring(self) -> MeasuringOptions:
        """The options the measuring phase reads."""
        return MeasuringOptions(self.measure, self.time_budget_s, self.timeout_s, self.benchmark)
