"""Building blocks for candidates: each works on the (copied) workload it is given and returns it changed.

Torch is imported only when a transform runs (``torch_parts``): rules make candidates while analyzing a trace,
which never imports torch.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

    from convdoctor.analyzer.capture.workload import Workload


def autocast(dtype: torch.dtype) -> Callable[[Workload], Workload]:
    """A transform that runs the model under autocast to ``dtype`` on the workload's device."""

    def transform(workload: Workload) -> Workload:
        from convdoctor.analyzer.candidates.torch_parts import Autocast

        return replace(workload, model=Autocast(workload.model, workload.device.type, dtype))

    return transform


def autocast_to(dtype_name: str) -> Callable[[Workload], Workload]:
    """``autocast`` to the torch dtype named ``dtype_name`` ("bfloat16"), for a rule that builds its candidate without
    importing torch; it pickles (a job's workers receive the candidate)."""
    return partial(_autocast_to, dtype_name)


def _autocast_to(dtype_name: str, workload: Workload) -> Workload:
    import torch

    return autocast(getattr(torch, dtype_name))(workload)


def float32_compute(workload: Workload) -> Workload:
    """The workload with its model run in float32, outputs cast back to the inputs' dtype
    (``torch_parts.Float32Compute``): moves float16/bfloat16 convolutions off ATen's reference path on a CPU."""
    from convdoctor.analyzer.candidates.torch_parts import Float32Compute

    return replace(workload, model=Float32Compute(workload.model))


def intra_op_threads(threads: int) -> Callable[[Workload], Workload]:
    """A transform that runs the model's forward with ``threads`` intra-op threads (``torch.set_num_threads``)."""

    def transform(workload: Workload) -> Workload:
        from convdoctor.analyzer.candidates.torch_parts import IntraOpThreads

        return replace(workload, model=IntraOpThreads(workload.model, threads))

    return transform


def compiled(workload: Workload) -> Workload:
    """The workload with its model compiled by torch.compile (default settings)."""
    from convdoctor.analyzer.candidates.torch_parts import Compiled

    return replace(workload, model=Compiled(workload.model))


def frozen_compiled(workload: Workload) -> Workload:
    """The workload with its model compiled by torch.compile with inductor's ``freezing`` set while it compiles
    (``torch_parts.Compiled``): for eval, where the parameters are constants. A frozen graph guards on its
    parameters' identity, so each copy compiles anew: a comparison reuses one copy (``Workload.reuse_copy``)."""
    from convdoctor.analyzer.candidates.torch_parts import Compiled

    return replace(workload, model=Compiled(workload.model, freezing=True), reuse_copy=True)


def backend_flags(**flags: bool) -> Callable[[Workload], Workload]:
    """A transform that runs the model's forward with the named ``torch.backends`` switches set
    (``torch_parts.BACKEND_FLAGS``)."""

    def transform(workload: Workload) -> Workload:
        from convdoctor.analyzer.candidates.torch_parts import BackendFlags

        return replace(workload, model=BackendFlags(workload.model, flags))

    return transform


def with_ddp(workload: Workload, **changes: object) -> Workload:
    """The workload of a rank of a job with other DistributedDataParallel settings (use through functools.partial,
    which pickles: a job's workers receive the candidate)."""
    if workload.ddp is None:
        raise ValueError("DDP settings apply to a rank of a data-parallel job (profile --nproc N)")
    return replace(workload, ddp=replace(workload.ddp, **changes))
