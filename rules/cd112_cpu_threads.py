"""CD112 cpu-threads: a CPU workload whose convolutions run on fewer intra-op threads than the cores it may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.candidates.transforms import intra_op_threads
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity


def _snippet(threads: int, cores: int) -> str:
    return (
        "import os\n"
        "import torch\n\n"
        f"# the trace ran with torch.get_num_threads() == {threads}: look for torch.set_num_threads({threads}) in\n"
        "# your code, or OMP_NUM_THREADS / MKL_NUM_THREADS exported by the job script or container\n"
        f"torch.set_num_threads(len(os.sched_getaffinity(0)))  # {cores} cores available to this process\n"
        "# or in the shell that starts it:  unset OMP_NUM_THREADS\n"
        "# several processes on one machine: give each len(os.sched_getaffinity(0)) // processes threads"
    )


@dataclass(frozen=True)
class CpuThreadsEvidence:
    """Fewer intra-op threads than available cores while convs fill part of the step."""

    threads: int  # torch.get_num_threads() at capture
    available_cores: int  # the process's share of the cores it may run on
    conv_share: float  # of step time
    conv_ms_per_step: float
    step_ms: float
    mode: str  # "train" or "eval"

    def message(self) -> str:
        plural = "s" if self.threads != 1 else ""
        return (f"torch ran {self.threads} intra-op thread{plural} with {self.available_cores} cores available to "
                f"the process while convs took {self.conv_share:.0%} of the {self.step_ms:.2f} ms step")


class CpuThreadsRule:
    """On CPU, torch uses fewer intra-op threads than the cores available while convolutions fill the step."""

    id = "CD112"
    name = "cpu-threads"
    summary = "On CPU, convolutions run on fewer intra-op threads than the cores the process may use"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    min_conv_share = 0.1  # Options: smallest share of step time in conv layers for the finding to be reported
    warning_share = 0.3  # Options: share of step time in conv layers from which the finding is a warning

    doc = """\
## What it detects
A CPU workload (the trace has no CUDA kernels) captured while `torch.get_num_threads()` was lower than the
number of cores the process may run on (`len(os.sched_getaffinity(0))`), while convolutions are a meaningful
share of the step. The usual causes are `torch.set_num_threads(1)` left in user or library code, and
`OMP_NUM_THREADS=1` (or `MKL_NUM_THREADS`) exported by a job script, a container image or a launcher.

## Why it is slow
CPU convolutions (oneDNN, or im2col + GEMM) split their output over PyTorch's intra-op thread pool. With
fewer threads than cores, the idle cores do nothing while each conv runs: with 1 thread on an 8-core
machine, a conv that scales well takes up to 8 times as long. The thread count is process-wide, so one
stray call slows every later step.

## Example
```python
import torch
torch.set_num_threads(1)  # or: OMP_NUM_THREADS=1 python infer.py
model = torchvision.models.resnet18().eval()
with torch.no_grad():
    out = model(torch.randn(8, 3, 224, 224))
```

## Use instead
```python
import os
import torch
torch.set_num_threads(len(os.sched_getaffinity(0)))  # or unset OMP_NUM_THREADS before starting Python
```
Leave a core or two free when DataLoader workers or other work run beside the model. When several
processes share one machine (one per GPU, several ranks, a multi-worker server), give each
`cores // processes` threads: more threads than cores in total oversubscribe the machine, and spinning
OpenMP threads that wait on each other make steps slower than fewer threads would.

## Evidence
The settings convdoctor records into the trace at capture: `threads` (`torch.get_num_threads()`),
`available_cores` (`len(os.sched_getaffinity(0))`, the CPUs the process may run on), `device` and `mode`, and
for a rank of a data-parallel job `world_size` (its share is `available_cores // world_size`);
the absence of CUDA kernels; the conv layers' host time per step against the step time. A trace captured by
another tool has no such record, and the rule then says nothing rather than guess the machine it ran on.
The affinity mask does not show a container's CPU quota (cgroup `cpu.max`): where a quota allows fewer cores
than the mask, fewer threads can be right, which is why the candidate is measured before it is recommended.
In train mode the candidate is not measured: the backward runs outside the model's forward, so one process
cannot time both thread counts for the whole step side by side.

## Options
`min_conv_share` (fraction of step time, default 0.1): smallest share of the step spent in conv layers for
the finding to be reported.
`warning_share` (fraction of step time, default 0.3): share of the step in conv layers from which the
finding is a warning rather than info.

## References
- https://pytorch.org/docs/stable/generated/torch.set_num_threads.html
- https://pytorch.org/docs/stable/notes/cpu_threading_torchscript_inference.html
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#cpu-specific-optimizations
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        env = profile.environment
        threads, cores = env.threads, env.available_cores
        if threads is None or cores is None or threads <= 0 or cores <= 0:
            return  # not recorded (a trace from elsewhere): the machine it ran on is unknown
        if profile.has_device_events or not (env.device or "cpu").startswith("cpu"):
            return  # GPU workload: the host threads are not what runs the convs
        world_size = env.world_size
        if world_size is not None and world_size > 1:
            cores = max(1, cores // world_size)  # a rank of a job on this machine: its share of the cores
        if threads >= cores:
            return
        conv_us = analysis.conv_time_us
        share = analysis.share(conv_us)
        if share < self.min_conv_share:
            return
        mode = env.mode if env.mode in ("train", "eval") else analysis.mode
        advice = (
            f"torch.get_num_threads() was {threads} while {cores} cores are available to this process, so each "
            f"conv ran on {threads / cores:.0%} of the cores it could use. Find where the count is lowered "
            "(torch.set_num_threads in your code or a library; OMP_NUM_THREADS or MKL_NUM_THREADS set by a job "
            "script or container) and raise it to the available cores. Leave a core or two free if DataLoader "
            "workers or other work run beside the model; if several processes share this machine, give each "
            "cores // processes threads, since more threads than cores in total oversubscribe it and run slower."
        )
        candidate = None
        if mode == "train":
            advice += (" Not measured in train mode: the backward runs after the model's forward returns, outside "
                       "any wrapper around the model, so one process cannot time both thread counts for the whole "
                       "step; set the thread count for the whole run and compare two runs.")
        else:
            candidate = Candidate(
                title=f"forward with {cores} intra-op threads instead of {threads}",
                transform=intra_op_threads(cores),
                numerics=NumericsContract.EXACT,
                tolerance=1e-4,  # reductions may be split differently across threads
                stage=PlanStage.WRAPPER,
            )
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity if share >= self.warning_share else Severity.INFO,
            fix=f"Use all {cores} available cores: torch.set_num_threads({cores}) or unset OMP_NUM_THREADS",
            advice=advice,
            snippet=_snippet(threads, cores),
            layers=[layer.name for layer in analysis.layers],
            evidence=CpuThreadsEvidence(threads=threads, available_cores=cores, conv_share=share,
                                        conv_ms_per_step=conv_us / 1e3, step_ms=analysis.step_time_us / 1e3, mode=mode),
            estimated_saving=None,  # how convs scale with threads is not in the trace: measured, not estimated
            candidate=candidate,
        )

