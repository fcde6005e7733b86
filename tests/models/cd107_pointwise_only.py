"""CD107 non-trigger: wide dense convs, but all 1x1 (pointwise): grouping them would cut channels apart."""

import torch
from torch import nn


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(64, 128, 1), nn.ReLU(), nn.Conv2d(128, 128, 1))


def get_inputs(batch_size: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 64, 56, 56)
