"""Two Conv2d(bias=True) -> BatchNorm2d pairs: each conv bias is redundant, the BN right after removes it.

BatchNorm subtracts the per-channel mean of its input (the batch mean in training, the running mean in eval),
so a per-channel constant added by the conv just before it changes nothing but costs an add and parameters.
"""
import torch
from torch import nn


class BiasBeforeBn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(32)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


def get_model():
    torch.manual_seed(0)
    return BiasBeforeBn()


def get_inputs(batch_size=4):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 32, 32)
