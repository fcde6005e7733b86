"""A model that prints a lot from its forward: none of it may reach convdoctor's own stdout."""
import torch
from torch import nn


class Chatty(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        print("activation stats:", "x" * 100_000)
        return self.conv(x)


def get_model():
    print("building the model")
    return Chatty()


def get_inputs():
    return torch.randn(1, 3, 16, 16)
