import torch

something_else = torch.nn.Conv2d(3, 8, 3)
