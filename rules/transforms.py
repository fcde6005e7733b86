"""Building blocks for candidates: each works on the (copied) workload it is given and returns it changed."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from convdoctor.analyzer.module_scope import ROOT_NAME
from convdoctor.analyzer.workload import Workload, map_tensors


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


class Autocast(nn.Module):
    """Runs the wrapped model under ``torch.autocast`` and returns float32 outputs."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args: object, **kwargs: object) -> object:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            output = self.model(*args, **kwargs)
        return map_tensors(output, lambda t: t.float() if t.is_floating_point() else t)


def autocast(dtype: torch.dtype) -> Callable[[Workload], Workload]:
    """A transform that runs the model under autocast to ``dtype`` on the workload's device."""

    def transform(workload: Workload) -> Workload:
        return replace(workload, model=Autocast(workload.model, workload.device.type, dtype))

    return transform


class IntraOpThreads(nn.Module):
    """Runs the wrapped model's forward with ``threads`` intra-op threads, and puts the previous count back after.

    Only the forward runs inside: a backward started later from its outputs runs with the caller's threads.
    """

    def __init__(self, model: nn.Module, threads: int) -> None:
        super().__init__()
        self.model = model
        self.threads = threads

    def forward(self, *args: object, **kwargs: object) -> object:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.model(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)


def intra_op_threads(threads: int) -> Callable[[Workload], Workload]:
    """A transform that runs the model's forward with ``threads`` intra-op threads (``torch.set_num_threads``)."""

    def transform(workload: Workload) -> Workload:
        return replace(workload, model=IntraOpThreads(workload.model, threads))

    return transform


class Compiled(nn.Module):
    """The model under ``torch.compile`` (default mode), compiled on the first call of each copy."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._compiled: Callable[..., object] | None = None  # a compiled function, not a registered module

    def forward(self, *args: object, **kwargs: object) -> object:
        if self._compiled is None:
            self._compiled = torch.compile(self.model.forward)
        return self._compiled(*args, **kwargs)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_compiled"] = None  # a copy compiles its own model, never the original's
        return state


def compiled(workload: Workload) -> Workload:
    """The workload with its model compiled by torch.compile (default settings)."""
    return replace(workload, model=Compiled(workload.model))


BACKEND_FLAGS = {  # name -> (module, attribute) of the torch.backends switches a candidate may set
    "cudnn_benchmark": (torch.backends.cudnn, "benchmark"),
    "cudnn_allow_tf32": (torch.backends.cudnn, "allow_tf32"),
    "matmul_allow_tf32": (torch.backends.cuda.matmul, "allow_tf32"),
}


class BackendFlags(nn.Module):
    """Runs the wrapped model's forward with some ``torch.backends`` switches set, and puts them back after.

    Only the forward runs inside: a backward started later from its outputs runs with the caller's switches.
    """

    def __init__(self, model: nn.Module, flags: dict[str, bool]) -> None:
        super().__init__()
        unknown = set(flags) - set(BACKEND_FLAGS)
        if unknown:
            raise ValueError(f"unknown backend flags {sorted(unknown)}; known: {sorted(BACKEND_FLAGS)}")
        self.model = model
        self.flags = dict(flags)

    def forward(self, *args: object, **kwargs: object) -> object:
        previous = {name: getattr(*BACKEND_FLAGS[name]) for name in self.flags}
        for name, value in self.flags.items():
            setattr(*BACKEND_FLAGS[name], value)
        try:
            return self.model(*args, **kwargs)
        finally:
            for name, value in previous.items():
                setattr(*BACKEND_FLAGS[name], value)


def backend_flags(**flags: bool) -> Callable[[Workload], Workload]:
    """A transform that runs the model's forward with the named ``torch.backends`` switches set (BACKEND_FLAGS)."""

    def transform(workload: Workload) -> Workload:
        return replace(workload, model=BackendFlags(workload.model, flags))

    return transform


def with_ddp(workload: Workload, **changes: object) -> Workload:
    """The workload of a rank of a job with other DistributedDataParallel settings (use through functools.partial,
    which pickles: a job's workers receive the candidate)."""
    if workload.ddp is None:
        raise ValueError("DDP settings apply to a rank of a data-parallel job (profile --nproc N)")
    return replace(workload, ddp=replace(workload.ddp, **changes))
