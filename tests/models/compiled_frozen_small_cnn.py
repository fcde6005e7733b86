"""examples/small_cnn.py returned compiled with inductor's freezing on (eval): BatchNorms folded, convs fused with
their ReLU and residual adds into oneDNN calls. tests/data/small_cnn_frozen_compiled_cpu.pt.trace.json.gz was
captured from it."""

import sys
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import small_cnn  # noqa: E402

inductor_config.freezing = True


def get_model() -> torch.nn.Module:
    return torch.compile(small_cnn.get_model().eval())


def get_inputs(batch_size: int = 4) -> torch.Tensor:
    return small_cnn.get_inputs(batch_size)
