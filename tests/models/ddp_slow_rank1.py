"""A tiny conv net for data-parallel tests: rank 1 sleeps in its forward (a stand-in for slow data loading), and each
worker writes its process id where the test can check it has gone (CONVDOCTOR_TEST_PIDS, when set)."""

import os
import time
from pathlib import Path

import torch
from torch import nn

SLEEP_S = 0.15
if os.environ.get("CONVDOCTOR_TEST_PIDS") and "RANK" in os.environ:
    Path(os.environ["CONVDOCTOR_TEST_PIDS"], f"rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.environ.get("RANK") == "1":
            time.sleep(SLEEP_S)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def get_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


def get_inputs(batch_size: int = 4) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 32, 32)
