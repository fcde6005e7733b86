"""An image classifier whose forward prepares its own input: uint8 → float, resize 256×256 → 224×224, ImageNet
normalization, then the convs. All of that runs once per image per epoch and belongs in the data pipeline (CD115)."""

import torch
import torch.nn.functional as F
from torch import nn


class RawImageClassifier(nn.Module):
    """Takes a uint8 N×3×256×256 batch straight from the decoder."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) / 255.0
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        x = self.features(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return RawImageClassifier()


def get_inputs(batch_size: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (batch_size, 3, 256, 256), dtype=torch.uint8, generator=generator)
