"""A model that flips memory format between its convolutions: channels_last in, a .contiguous() in the middle."""
import torch
from torch import nn


class Flip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(8, 16, 3, padding=1)
        self.conv_b = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        x = self.conv_a(x)  # channels_last in, channels_last out
        x = x.contiguous()  # NHWC -> NCHW copy: the conversion charged to conv_b
        return self.conv_b(x)


def get_model():
    return Flip().to(memory_format=torch.channels_last)


def get_inputs(batch_size=2):
    return torch.randn(batch_size, 8, 32, 32).contiguous(memory_format=torch.channels_last)
