"""CD108 fixture: one dense 5x5 conv worth splitting, and convs that must be left alone.

- ``stem``: 3 input channels, too narrow to split.
- ``features.0``: dense 5x5, 32->64, stride 2, dilation 2, reflect padding, no bias: proposed.
- ``features.2`` / ``features.3``: already depthwise (groups=64) and pointwise (1x1).
- ``up``: a transposed conv.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.features = nn.Sequential(
            nn.Conv2d(32, 64, 5, stride=2, padding=4, dilation=2, bias=False, padding_mode="reflect"),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, groups=64),
            nn.Conv2d(64, 64, 1),
        )
        self.up = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.features(self.stem(x)))


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return Net()


def get_inputs(batch_size: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 64, 64)
