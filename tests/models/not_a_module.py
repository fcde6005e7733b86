import torch


def get_model():
    return lambda x: x


def get_inputs():
    return torch.randn(1, 3, 8, 8)
