"""A conv stack whose get_model() pins torch to one intra-op thread, the way user code often ends up there.

``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1`` exported for a data loader, a job script or a
container) changes the whole process: every later step runs its convolutions on one core.
Loading this file changes the thread count of the process that loads it; tests restore it.
"""
import torch
from torch import nn


class ConvStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def get_model():
    torch.set_num_threads(1)  # e.g. copied from a data-loading script, or left from a benchmark
    torch.manual_seed(0)
    return ConvStack()


def get_inputs(batch_size=4):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 64, 64)
