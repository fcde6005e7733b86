"""Swapping conv layers for other modules, each built like the original."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from convdoctor.analyzer.candidates.surgery import replace_layers

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    from torch import nn

    from convdoctor.analyzer.capture.workload import Workload

def replace_convs(workload: Workload, names: list[str], build: Callable[[nn.Conv2d], nn.Module]) -> Workload:
    """The workload with each named nn.Conv2d replaced by ``build(old)``; ``<model>`` is the model itself."""
    from torch import nn


    def checked(old: nn.Module) -> nn.Module:
        if type(old) is not nn.Conv2d:
            raise TypeError(f"expected an nn.Conv2d to replace, found {type(old).__name__}")
        return build(old)

    return replace_layers(workload, names, checked)


def like(new: nn.Module, old: nn.Conv2d) -> nn.Module:
    """``new`` in ``old``'s train/eval state, requires_grad and weight memory format (device/dtype set at init)."""
    import torch

    new.train(old.training)
    channels_last = old.weight.dim() == 4 and old.weight.is_contiguous(memory_format=torch.channels_last) \
        and not old.weight.is_contiguous()
    with torch.no_grad():
        for param in new.parameters():
            param.requires_grad_(old.weight.requires_grad)
            if channels_last and param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    return new
