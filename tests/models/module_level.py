"""Module-level `model` and `inputs` (a dict of keyword tensors), and a neighbour import."""
import torch
from neighbour_blocks import TwoConvs

model = TwoConvs()
inputs = {"image": torch.randn(2, 3, 16, 16)}
