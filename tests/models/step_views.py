"""Modules and Memory views fixture: a tiny nested net (convs, BatchNorm, a reused activation, a Linear head)."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(Block(3, 16), Block(16, 32), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 16 * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return Net()


def get_inputs(batch_size: int = 4) -> torch.Tensor:
    return torch.randn(batch_size, 3, 32, 32)
