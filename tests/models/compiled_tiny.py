"""A tiny conv net returned already compiled (torch.compile): convdoctor profiles it as compiled (it compiles in
seconds)."""

import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + y)


def get_model():
    torch.manual_seed(0)
    return torch.compile(Tiny())


def get_inputs(batch_size=2):
    return torch.randn(batch_size, 3, 16, 16)
