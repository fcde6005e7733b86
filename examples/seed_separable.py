"""The seed article's third case: a depthwise-separable replacement of seed_conv.py's dense 3x3 convolution.

Set SEPARABLE = False to profile the standard convolution it replaces (the same as seed_conv.py).

    convdoctor profile examples/seed_separable.py
"""

import torch
from torch import nn

SEPARABLE = True


class DepthwiseSeparableConv(nn.Module):
    """A 3x3 depthwise convolution (one filter per input channel) followed by a 1x1 pointwise convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return DepthwiseSeparableConv(64, 128) if SEPARABLE else nn.Conv2d(64, 128, kernel_size=3, padding=1)


def get_inputs(batch_size: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 64, 224, 224)
