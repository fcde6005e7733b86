"""A channels_last model on a one-channel input: the first conv's input fits both formats, so nothing flips."""
import torch
from torch import nn


def get_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    return model.to(memory_format=torch.channels_last)


def get_inputs(batch_size=2):
    torch.manual_seed(1)
    return torch.randn(batch_size, 1, 32, 32).contiguous(memory_format=torch.channels_last)
