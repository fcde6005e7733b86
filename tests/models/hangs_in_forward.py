"""A model whose forward never returns (a busy loop, as a deadlocked data path would look)."""
import torch
from torch import nn


class Hangs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            x = x + 0


def get_model():
    return Hangs()


def get_inputs():
    return torch.randn(1, 3, 16, 16)
