"""Everything `convdoctor profile` can be told, as one value the CLI and the Python API build."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from convdoctor.analyzer.capture.contention import QuietPolicy
from convdoctor.analyzer.measure.phase import MeasuringOptions
from convdoctor.analyzer.measure.results import BenchmarkSettings

# The default mode's time for one comparison's own blocks, past its first three (BenchmarkSettings.budget_s).
CANDIDATE_BUDGET_S = 20.0
# The default mode's time for the blocks the in-process candidates share, after which each candidate ends at its
# third block (MeasuringOptions.wrap_up_after_s): ResNet-18 at batch 8 on the 2-core CPU, five variants, takes 6-7 s
# a block, so a candidate that has not settled by its third block gets a fourth.
WRAP_UP_AFTER_S = 20.0


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
    wait_quiet_s: float = 60.0  # the most the run waits, in all, for other processes to leave the cores (0: never)
    thorough: bool = False  # every planned block of every comparison: no early stop
    compiled: bool = False  # also profile the model compiled by torch.compile (always for a compiled model file)

    def measuring(self, quiet: QuietPolicy | None = None) -> MeasuringOptions:
        """The options the measuring phase reads, under the run's rule for busy machines."""
        if self.thorough:
            return MeasuringOptions(self.measure, self.time_budget_s, self.timeout_s,
                                    replace(self.benchmark, early_stop=False), quiet)
        return MeasuringOptions(self.measure, self.time_budget_s, self.timeout_s,
                                replace(self.benchmark, budget_s=self.benchmark.budget_s or CANDIDATE_BUDGET_S), quiet,
                                wrap_up_after_s=WRAP_UP_AFTER_S)
