"""Peak memory of one step: what a candidate costs in memory beside what it saves in time.

On CUDA, the caching allocator's ``max_memory_allocated`` over one step, above what was allocated before it. On the
CPU, the profiler's memory events (``profile_memory=True``) of one step, summed in time order: the largest amount
the step held at once above what was held before it (activations, workspaces, outputs). Both count tensors, not
the allocator's cached or the process's resident memory.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from convdoctor.analyzer.capture.recording import quiet_profiler
from convdoctor.analyzer.capture.workload import Workload, make_step, synchronize

PEAK_TENSOR_MEMORY = "tensor memory held at once during one step, above what was held before it"


def step_peak_bytes(workload: Workload, step: Callable[[], Any] | None = None) -> int | None:
    """Peak tensor bytes one step of a copy of the workload allocates on its device; None where unmeasurable.
    ``step``: a step of a copy made already (a compiled one), instead of a new copy's."""
    if step is None:
        step = make_step(workload.copy())
    device = workload.device
    step()  # lazy initialisation (oneDNN primitives, cuDNN handles, optimizer state) is not the step's memory
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with quiet_profiler(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    changes = sorted((e.start_ns(), e.nbytes()) for e in profiler.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    held = peak = 0
    for _, change in changes:
        held += change
        peak = max(peak, held)
    return peak if changes else None
