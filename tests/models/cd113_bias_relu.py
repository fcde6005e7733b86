"""Conv biases that are not redundant: each conv output goes through a ReLU before anything normalizes it.

conv1 -> ReLU -> bn (the BN follows the ReLU, not the conv), and conv2 -> ReLU with no BN at all.
"""
import torch
from torch import nn


class BiasThenRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=True)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=True)

    def forward(self, x):
        x = self.bn(self.relu(self.conv1(x)))
        return self.relu(self.conv2(x))


def get_model():
    torch.manual_seed(0)
    return BiasThenRelu()


def get_inputs(batch_size=4):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 32, 32)
