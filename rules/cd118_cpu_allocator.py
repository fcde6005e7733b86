"""CD118 cpu-allocator: on CPU, every step maps fresh memory pages for its activations, because glibc malloc gives
large blocks back to the kernel and asks for them again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage
from convdoctor.analyzer.capture.host_allocator import KEEP_HEAP
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Requirement, Severity

PAGE_BYTES = 4096


def _identity(workload):  # the change is the process environment, not the model
    return workload


@dataclass(frozen=True)
class CpuAllocatorEvidence:
    """The minor page faults of a warm step and the allocator the process ran with, as recorded at capture."""

    minor_faults_per_step: int
    fresh_mib_per_step: float
    allocator: str
    step_ms: float

    def message(self) -> str:
        return (f"each step took {self.minor_faults_per_step:,} minor page faults ({self.fresh_mib_per_step:.1f} MiB "
                f"of freshly mapped memory) with {self.allocator}")


class CpuAllocatorRule:
    """On CPU, the steps page-fault on fresh memory every time: the allocator returns activations to the kernel."""

    id = "CD118"
    name = "cpu-allocator"
    summary = "On CPU, each step page-faults on freshly mapped memory: glibc malloc returns large blocks every step"
    severity = Severity.WARNING
    requires = frozenset({Requirement.CONV_LAYERS})
    min_faults_per_step = 256  # Options: minor page faults per step (1 MiB of fresh 4 KiB pages) to report it

    doc = """\
## What it detects
A CPU workload whose steady-state steps (after warm-up) each take many minor page faults: memory the process
had given back to the kernel and must map, and have zeroed, again. convdoctor counts them at capture
(`getrusage` minor faults over a warm step, before the profiler starts and before it fixes glibc's thresholds
for its own tracing and measuring) and records the allocator the process ran with.

## Why it is slow
glibc malloc serves blocks above `M_MMAP_THRESHOLD` (128 KiB at start, adapting up to 32 MiB) with `mmap()` and
returns them with `munmap()` when freed; it also trims free memory at the top of the heap. Conv activations
are megabytes, allocated and freed every step, so every step maps them afresh: one page fault per 4 KiB page,
each a trap into the kernel plus zeroing the page, and TLB shootdowns on every unmap. On small batches this
can be a tenth or more of a CPU inference step, and it makes step times noisy.

## Example
```sh
python infer.py          # glibc defaults: thousands of minor page faults in every step
```

## Use instead
```sh
# keep freed blocks in the heap for reuse (set before Python starts; costs: the process keeps its peak memory)
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736
python infer.py
# or preload an allocator built for this: jemalloc or tcmalloc
LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python infer.py
```

## Evidence
`minor_faults_per_step` and `allocator` recorded in the trace at capture (a trace captured by another tool has
neither, and the rule then says nothing); the absence of CUDA kernels; the step time. The candidate is
measured in worker processes that differ only in these environment variables, alternating steps
between them, a fresh pair for each block of rounds (a process setting cannot be switched inside one process),
so it needs a model file; its
outputs are compared on the first values of the first step. It is reported beside the plan, not in it: the
plan's candidates are combined inside one process.

## Options
`min_faults_per_step` (default 256, 1 MiB of fresh pages per step): fewer faults per step are not reported.

## References
- https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html
- https://man7.org/linux/man-pages/man3/mallopt.3.html
- https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#switch-memory-allocator
"""

    def check(self, analysis: ConvAnalysis) -> Iterable[Finding]:
        profile = analysis.profile
        env = profile.environment
        faults, allocator = env.minor_faults_per_step, env.allocator
        if faults is None or allocator is None:
            return  # not recorded: a trace captured by another tool
        if profile.has_device_events or not (env.device or "cpu").startswith("cpu"):
            return
        if faults < self.min_faults_per_step or not allocator.startswith("glibc malloc"):
            return
        fresh_mib = faults * PAGE_BYTES / 2**20
        settings = " ".join(f"{k}={v}" for k, v in KEEP_HEAP.items())
        yield Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=self.severity,
            fix="Keep freed memory in the allocator: glibc MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, or jemalloc",
            advice=(f"Steps map and unmap {fresh_mib:.1f} MiB of activations every time. Start Python with {settings} "
                    "(glibc keeps large freed blocks for reuse and stops trimming the heap) or with jemalloc or "
                    "tcmalloc preloaded. The process then holds on to its peak memory between steps. This is a "
                    "setting of how the process starts, so it is measured in pairs of worker processes and kept out of "
                    "the in-process plan; convdoctor traced and measured the other findings with glibc's thresholds "
                    "fixed in its own process, so their speedups are on top of this one."),
            snippet=f"export {settings}\npython your_script.py",
            layers=[],
            evidence=CpuAllocatorEvidence(minor_faults_per_step=faults, fresh_mib_per_step=fresh_mib,
                                          allocator=allocator, step_ms=analysis.step_time_us / 1e3),
            candidate=Candidate(
                title=f"start the process with {settings}",
                transform=_identity,
                numerics=NumericsContract.EXACT,
                tolerance=1e-5,  # the same arithmetic; only thread scheduling may reorder a reduction
                stage=PlanStage.WRAPPER,
                process_environment=dict(KEEP_HEAP),
            ),
        )
