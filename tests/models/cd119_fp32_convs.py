"""Three float32 3x3 convolutions with batch norm and ReLU: conv-heavy, small enough to capture in a second.

On a CPU with native bfloat16 (AVX512-BF16, AMX-BF16) CD119 proposes bfloat16 autocast; elsewhere it stays quiet.
"""
import torch
from torch import nn


def get_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
    )


def get_inputs(batch_size=4):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 32, 32)
