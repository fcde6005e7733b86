"""The seed article's second case: the same 3x3 convolution with groups=4 (a quarter of the FLOPs).

    convdoctor profile examples/seed_grouped.py
"""

import torch
from torch import nn


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(64, 128, kernel_size=3, padding=1, groups=4)


def get_inputs(batch_size: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 64, 224, 224)
