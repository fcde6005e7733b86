"""CD106 fixture: one 16x16 image per call through eight 8-channel convs: each op has microseconds of work."""

import torch
from torch import nn


def get_model() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
    for _ in range(7):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def get_inputs(batch_size: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 16, 16)
