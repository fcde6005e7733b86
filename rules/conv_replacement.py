"""Conv layers a candidate can swap for other modules, and building the replacement like the original."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from convdoctor.analyzer.layers import ConvLayer
from convdoctor.rules.transforms import replace_layers

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    from torch import nn

    from convdoctor.analyzer.workload import Workload

FUNCTIONAL_CALL = re.compile(r":conv\w*#\d+$")  # a conv op charged to a module that is not itself the conv


def not_replaceable(layer: ConvLayer) -> str | None:
    """Why a trace layer cannot be swapped for another nn.Conv2d in the model; None when it can."""
    if FUNCTIONAL_CALL.search(layer.name):
        return "functional conv (F.conv2d inside a module's forward): there is no module to replace"
    if layer.module_class is None:
        return "the trace has no module scope for this conv"
    if layer.module_class != "Conv2d" or layer.op != "conv2d" or layer.transposed:
        return f"module class {layer.module_class} is not nn.Conv2d"
    return None


def is_dense_conv2d(layer: ConvLayer) -> bool:
    """A forward 2-D convolution with one group whose shapes and FLOPs the trace gives."""
    return (layer.op == "conv2d" and not layer.transposed and layer.groups == 1 and layer.flops is not None
            and len(layer.input_shape) == 4 and len(layer.weight_shape) == 4 and layer.output_shape is not None)


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


def flops_si(flops: float, unit_of: float | None = None) -> str:
    """FLOPs in GFLOP, or in MFLOP when ``unit_of`` (default: the value itself) is under 1 GFLOP."""
    return f"{flops / 1e9:.2f} GFLOP" if (unit_of or flops) >= 1e9 else f"{flops / 1e6:.2f} MFLOP"
