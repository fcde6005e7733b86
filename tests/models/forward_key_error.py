"""A model whose forward has a bug unrelated to its inputs' shapes."""
import torch
from torch import nn


class Buggy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.heads = {"main": nn.Identity()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads["auxiliary"](self.conv(x))


def get_model():
    return Buggy()


def get_inputs():
    return torch.randn(1, 3, 16, 16)
