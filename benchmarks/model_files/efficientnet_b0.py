"""torchvision's efficientnet_b0 (random weights, benchmarks/models.py) as a model file: batch 8 of 224×224 images."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402  (benchmarks/models.py)


def get_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.EfficientNetB0()


def get_inputs(batch_size: int = 8) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 224, 224)
