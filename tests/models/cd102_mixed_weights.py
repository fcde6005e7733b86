"""Formats flip because one conv's weights alone are channels_last: the model's code forces nothing.

conv1 runs in NCHW; conv2 (channels_last weights) copies its NCHW input to NHWC and returns NHWC; conv3
(NCHW weights) then gets NHWC. Converting the whole model and its input to channels_last removes every flip.
"""
import torch
from torch import nn


def get_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1))
    model[2].to(memory_format=torch.channels_last)
    return model


def get_inputs(batch_size=2):
    torch.manual_seed(1)
    return torch.randn(batch_size, 8, 32, 32)
