"""Which conv layers a rule can propose to replace, and FLOPs in words (CD105, CD107, CD108, CD117)."""

from __future__ import annotations

import re

from convdoctor.analyzer.conv.layers import ConvLayer

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


def flops_si(flops: float, unit_of: float | None = None) -> str:
    """FLOPs in GFLOP, or in MFLOP when ``unit_of`` (default: the value itself) is under 1 GFLOP."""
    return f"{flops / 1e9:.2f} GFLOP" if (unit_of or flops) >= 1e9 else f"{flops / 1e6:.2f} MFLOP"
