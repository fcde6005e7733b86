import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3))

    def forward(self, x):
        return self.features(x)


def get_model():
    return Net()


def get_inputs():
    return torch.randn(1, 4, 16, 16)  # 4 channels where the first conv expects 3
