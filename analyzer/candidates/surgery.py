"""Module surgery on a copied workload: a submodule replaced by another, under every name it is registered as."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from convdoctor.analyzer.trace.module_scope import ROOT_NAME

if TYPE_CHECKING:
    from torch import nn

    from convdoctor.analyzer.capture.workload import Workload


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
