"""A tiny conv net whose rank 1 raises in its third forward, in the middle of a data-parallel job (rank 0 is then
waiting for it in a collective); each worker writes its process id where the test can check it has gone."""

import os
from pathlib import Path

import torch
from torch import nn

if os.environ.get("CONVDOCTOR_TEST_PIDS") and "RANK" in os.environ:
    Path(os.environ["CONVDOCTOR_TEST_PIDS"], f"rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))


class Flaky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if os.environ.get("RANK") == "1" and self.calls >= 2:
            raise RuntimeError("rank 1 lost its data shard")
        return self.conv(x)


def get_model() -> nn.Module:
    return Flaky()


def get_inputs() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16)
