"""CD117 fixture: stride-1 convs on a 64x64 map, each followed (through a ReLU) by a 2x2 stride-2 pooling, and a
dilation-4 conv beside undilated ones of the same shape."""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(16, 32, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.pool2 = nn.AvgPool2d(2, stride=2)
        self.plain = nn.Conv2d(32, 32, 3, padding=1)
        self.dilated = nn.Conv2d(32, 32, 3, padding=4, dilation=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.conv2(x))
        return self.dilated(self.plain(x))


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return Net()


def get_inputs(batch_size: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch_size, 16, 64, 64)
