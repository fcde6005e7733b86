"""CD105 fixture: an RGB stem (exempt) and two convs around a 30-channel activation (not a multiple of 8 or 16)."""

import torch
from torch import nn


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 30, 3, padding=1), nn.ReLU(),
        nn.Conv2d(30, 32, 3, padding=1),
    )


def get_inputs(batch_size: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 56, 56)
