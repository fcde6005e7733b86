"""Module names are user data: these must show up escaped in every report."""
import torch
from torch import nn


class Hostile(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("<script>alert(1)</script>", nn.Conv2d(3, 8, 3, padding=1))
        self.add_module('x" onerror="alert(1)', nn.Conv2d(8, 8, 3, padding=1))

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


def get_model():
    return Hostile()


def get_inputs(batch_size=1):
    return torch.randn(batch_size, 3, 16, 16)
