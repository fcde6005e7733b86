"""Building blocks for candidates: each works on the (copied) workload it is given and returns it changed.

Torch is imported only when a transform runs (``torch_parts``): rules make candidates while analyzing a trace,
which never imports torch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from convdoctor.analyzer.module_scope import ROOT_NAME

if TYPE_CHECKING:
    import torch
    from torch import nn

    from convdoctor.analyzer.workload import Workload


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``qualified_name`` is (the model itself cannot be replaced this way)."""
    parent_name, _, child = qualified_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def replace_layers(workload: Workload, names: list[str], build: Callable[[nn.Module], nn.Module]) -> Workload:
    """The workload with each named submodule replaced by ``build(old)``; the root model counts as ``<model>``.

    A module registered under several names (one object shared) is built once and put under every name, so
    that the candidate stays one model.
    """
    model = workload.model
    built: dict[int, tuple[nn.Module, nn.Module]] = {}  # id(old) -> (old, new); old kept alive so ids stay unique

    def once(old: nn.Module) -> nn.Module:
        if id(old) not in built:
            built[id(old)] = (old, build(old))
        return built[id(old)][1]

    for name in names:
        if name == ROOT_NAME:
            model = once(model)
            continue
        target = model.get_submodule(name)
        for path, module in list(model.named_modules(remove_duplicate=False)):
            if module is target:
                replace_module(model, path, once(target))
    return replace(workload, model=model)


def autocast(dtype: torch.dtype) -> Callable[[Workload], Workload]:
    """A transform that runs the model under autocast to ``dtype`` on the workload's device."""

    def transform(workload: Workload) -> Workload:
        from convdoctor.rules.torch_parts import Autocast

        return replace(workload, model=Autocast(workload.model, workload.device.type, dtype))

    return transform


def intra_op_threads(threads: int) -> Callable[[Workload], Workload]:
    """A transform that runs the model's forward with ``threads`` intra-op threads (``torch.set_num_threads``)."""

    def transform(workload: Workload) -> Workload:
        from convdoctor.rules.torch_parts import IntraOpThreads

        return replace(workload, model=IntraOpThreads(workload.model, threads))

    return transform


def compiled(workload: Workload) -> Workload:
    """The workload with its model compiled by torch.compile (default settings)."""
    from convdoctor.rules.torch_parts import Compiled

    return replace(workload, model=Compiled(workload.model))


def backend_flags(**flags: bool) -> Callable[[Workload], Workload]:
    """A transform that runs the model's forward with the named ``torch.backends`` switches set
    (``torch_parts.BACKEND_FLAGS``)."""

    def transform(workload: Workload) -> Workload:
        from convdoctor.rules.torch_parts import BackendFlags

        return replace(workload, model=BackendFlags(workload.model, flags))

    return transform


def with_ddp(workload: Workload, **changes: object) -> Workload:
    """The workload of a rank of a job with other DistributedDataParallel settings (use through functools.partial,
    which pickles: a job's workers receive the candidate)."""
    if workload.ddp is None:
        raise ValueError("DDP settings apply to a rank of a data-parallel job (profile --nproc N)")
    return replace(workload, ddp=replace(workload.ddp, **changes))
