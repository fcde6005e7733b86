"""Which trace operators compute a convolution: the conv analysis and the compiled view both ask."""

from __future__ import annotations

import functools
import re

CONV_OP = re.compile(
    r"^aten::(?!\w*backward)(conv[123]d|conv_transpose[123]d|_?convolution|_convolution_mode|cudnn_convolution\w*|"
    r"mkldnn_convolution|miopen_\w*convolution\w*|thnn_conv\w*|_?slow_conv\w*|_nnpack_spatial_convolution|conv_tbc)$"
)


# Name checks remembered per name: a trace repeats a few hundred names over hundreds of thousands of events.
@functools.cache
def is_conv_op(name: str) -> bool:
    """An operator that computes a convolution (CONV_OP)."""
    return CONV_OP.match(name) is not None
