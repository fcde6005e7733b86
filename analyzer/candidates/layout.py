"""The memory-format transform: model and inputs in channels_last (channels_last_3d for 5-D tensors)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a candidate runs: analyzing a trace never imports it
    import torch

    from convdoctor.analyzer.capture.workload import Workload


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor in channels_last, a 5-D one in channels_last_3d; other tensors unchanged."""
    import torch

    if tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    if tensor.dim() == 5:
        return tensor.contiguous(memory_format=torch.channels_last_3d)
    return tensor


def to_channels_last(workload: Workload) -> Workload:
    """The workload with every 4-D/5-D parameter, buffer and input in channels-last memory format."""
    import torch

    from convdoctor.analyzer.capture.workload import map_tensors

    model = workload.model
    with torch.no_grad():
        for param in model.parameters():
            param.data = channels_last(param.data)
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = channels_last(buffer)
    return replace(workload, model=model, inputs=map_tensors(workload.inputs, channels_last))
