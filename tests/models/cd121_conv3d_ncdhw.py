"""A float32 Conv3d network in NCDHW: on torch 2.13's CPU it runs oneDNN (aten::mkldnn_convolution), no slow path."""
import torch
from torch import nn


def get_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, padding=1))


def get_inputs(batch_size=2):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 4, 16, 16)
