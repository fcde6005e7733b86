"""The seed article's first case: one dense 3x3 convolution, 64 -> 128 channels, on a 1x64x224x224 input.

    convdoctor profile examples/seed_conv.py
"""

import torch
from torch import nn


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(64, 128, kernel_size=3, padding=1)


def get_inputs(batch_size: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 64, 224, 224)
