"""A model file whose module-level code never finishes (waiting on a resource that is not there)."""
import time

import torch
from torch import nn

while True:
    time.sleep(1)

model = nn.Conv2d(3, 8, 3)
inputs = torch.randn(1, 3, 16, 16)
