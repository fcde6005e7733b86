import torch

def get_model(:
    return torch.nn.Conv2d(3, 8, 3)
