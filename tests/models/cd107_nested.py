"""CD107 fixture: a nested net where two dense 3x3 convs can be grouped, and convs that must be left alone.

- ``stem``: 3 input channels do not divide into 4 groups.
- ``body.0.conv`` (64->64, 3x3) and ``body.1`` (64->128, 3x3, stride 2): dense and wide, proposed.
- ``head``: 1x1, mixes channels, not proposed.
- ``self.mix`` through ``F.conv2d``: dense, wide and heavy, but functional: there is no module to replace.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.body = nn.Sequential(Block(), nn.Conv2d(64, 128, 3, stride=2, padding=1))
        self.mix = nn.Parameter(torch.randn(128, 128, 3, 3) * 0.03)
        self.head = nn.Conv2d(128, 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        return self.head(F.conv2d(x, self.mix, padding=1))


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return Net()


def get_inputs(batch_size: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 64, 64)
