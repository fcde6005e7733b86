"""A small CNN in float16 on the CPU: every conv takes ATen's reference path (thnn_conv2d, slow_conv_dilated2d)."""
import torch
from torch import nn


def get_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(16, 16, 1),
    ).half()


def get_inputs(batch_size=2):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 16, 16).half()
