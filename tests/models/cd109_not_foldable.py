"""BatchNorm layers that must not be folded into a conv: on the input, after a ReLU, after a conv reused without it.

bn_in normalizes the input (no conv before it); bn_relu follows a ReLU, not the conv; bn2 follows conv2, but
conv2 is called a second time whose output no BN normalizes, so folding bn2 into conv2 would change that call.
"""
import torch
from torch import nn


class NotFoldable(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.bn_relu = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.bn_relu(self.relu(self.conv1(self.bn_in(x))))
        y = self.bn2(self.conv2(x))
        return self.conv2(y)


def get_model():
    torch.manual_seed(0)
    return NotFoldable()


def get_inputs(batch_size=2):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 32, 32)
