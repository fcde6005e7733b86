"""A small conv model whose every forward also sleeps, so that a test can interrupt a run mid-way."""
import time

import torch
from torch import nn


class Slow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.1)
        return self.bn(self.conv(x)).relu()


def get_model():
    return Slow()


def get_inputs():
    return torch.randn(2, 3, 32, 32)
