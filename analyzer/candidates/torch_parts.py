"""The torch side of candidates: the nn.Module wrappers and module classes that transforms build.

Imported only when a candidate is applied to a model, so that analyzing a trace never imports torch.
"""

from __future__ import annotations

import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from convdoctor.analyzer.candidates.conv_replacement import like
from convdoctor.analyzer.capture.workload import map_tensors

CONV_CLASSES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_CLASSES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class Autocast(nn.Module):
    """Runs the wrapped model under ``torch.autocast`` and returns float32 outputs."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args: object, **kwargs: object) -> object:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            output = self.model(*args, **kwargs)
        return map_tensors(output, lambda t: t.float() if t.is_floating_point() else t)


class Float32Compute(nn.Module):
    """Runs the wrapped model in float32 (its floating-point parameters and buffers converted once, its floating-point
    inputs on each call) and returns floating-point outputs in the dtype of the first floating-point input: the
    caller sees the dtypes it had."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.float()

    def forward(self, *args: object, **kwargs: object) -> object:
        given = [t.dtype for t in _tensors((args, kwargs)) if t.is_floating_point()]
        to32 = (lambda t: t.float() if t.is_floating_point() else t)  # noqa: E731
        output = self.model(*map_tensors(list(args), to32), **map_tensors(kwargs, to32))
        if not given:
            return output
        return map_tensors(output, lambda t: t.to(given[0]) if t.is_floating_point() else t)


def _tensors(value: object) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_tensors(value, lambda t: found.append(t) or t)
    return found


class IntraOpThreads(nn.Module):
    """Runs the wrapped model's forward with ``threads`` intra-op threads, and puts the previous count back after.

    Only the forward runs inside: a backward started later from its outputs runs with the caller's threads.
    """

    def __init__(self, model: nn.Module, threads: int) -> None:
        super().__init__()
        self.model = model
        self.threads = threads

    def forward(self, *args: object, **kwargs: object) -> object:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.model(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)


class Compiled(nn.Module):
    """The model under ``torch.compile`` (default mode), compiled on the first call of each copy.

    ``freezing``: inductor's ``freezing`` (parameters folded into the graph as constants: conv-bn folding, weights
    prepacked for oneDNN) is set while this copy compiles, that is during its first call, and put back after: never
    for another candidate or the user's code. Only eval compiles with grad disabled are frozen; a later recompile
    (other input shapes, grad mode) compiles without it.

    A frozen copy compiles a function of its own (its own code object), so that dynamo keeps its compiled code with
    the copy: a bound method goes through one wrapper frame of dynamo's that every compiled method in the process
    shares, and since a frozen graph guards on its parameters' identity, each fresh copy adds an entry there; on
    torch 2.13 the ninth copy hit ``recompile_limit`` (8) and ran eagerly, unnoticed by the benchmark.
    """

    def __init__(self, model: nn.Module, freezing: bool = False, mode: str = "default") -> None:
        super().__init__()
        self.model = model
        self.freezing = freezing
        self.mode = mode  # torch.compile's mode ("max-autotune": benchmarks/advice_quality.py)
        self._compiled: Callable[..., object] | None = None  # a compiled function, not a registered module

    def forward(self, *args: object, **kwargs: object) -> object:
        if self._compiled is not None:
            return self._compiled(*args, **kwargs)
        if not self.freezing:
            self._compiled = torch.compile(self.model.forward, mode=self.mode)
            return self._compiled(*args, **kwargs)
        from torch._inductor import config as inductor_config

        self._compiled = torch.compile(_own_entry(self.model), mode=self.mode)
        with inductor_config.patch(freezing=True):
            return self._compiled(*args, **kwargs)  # the first call compiles

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_compiled"] = None  # a copy compiles its own model, never the original's
        return state


def _own_entry(model: nn.Module) -> Callable[..., object]:
    """A function that calls ``model``, with a code object of its own (dynamo keeps compiled code per code object)."""

    def entry(*args: object, **kwargs: object) -> object:
        return model(*args, **kwargs)

    return types.FunctionType(entry.__code__.replace(), entry.__globals__, entry.__name__, entry.__defaults__,
                              entry.__closure__)


BACKEND_FLAGS = {  # name -> (module, attribute) of the torch.backends switches a candidate may set
    "cudnn_benchmark": (torch.backends.cudnn, "benchmark"),
    "cudnn_allow_tf32": (torch.backends.cudnn, "allow_tf32"),
    "matmul_allow_tf32": (torch.backends.cuda.matmul, "allow_tf32"),
    "mkldnn_enabled": (torch.backends.mkldnn, "enabled"),
}


class BackendFlags(nn.Module):
    """Runs the wrapped model's forward with some ``torch.backends`` switches set, and puts them back after.

    Only the forward runs inside: a backward started later from its outputs runs with the caller's switches.
    """

    def __init__(self, model: nn.Module, flags: dict[str, bool]) -> None:
        super().__init__()
        unknown = set(flags) - set(BACKEND_FLAGS)
        if unknown:
            raise ValueError(f"unknown backend flags {sorted(unknown)}; known: {sorted(BACKEND_FLAGS)}")
        self.model = model
        self.flags = dict(flags)

    def forward(self, *args: object, **kwargs: object) -> object:
        previous = {name: getattr(*BACKEND_FLAGS[name]) for name in self.flags}
        for name, value in self.flags.items():
            setattr(*BACKEND_FLAGS[name], value)
        try:
            return self.model(*args, **kwargs)
        finally:
            for name, value in previous.items():
                setattr(*BACKEND_FLAGS[name], value)


class PaddedConv2d(nn.Module):
    """An nn.Conv2d computed with zero-padded channels: the same outputs, channel counts a multiple of the block.

    Extra input channels are zeros appended to the input and zero weights; extra filters are zero and their
    outputs are sliced off. In training the padded weights get zero gradients, so they stay zero.
    """

    def __init__(self, conv: nn.Conv2d, in_to: int, out_to: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.conv = nn.Conv2d(in_to, out_to, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                              dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                              device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:conv.out_channels, :conv.in_channels] = conv.weight
            if conv.bias is not None:
                self.conv.bias.zero_()
                self.conv.bias[:conv.out_channels] = conv.bias
        like(self.conv, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.conv.in_channels - self.in_channels
        if extra:
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        y = self.conv(x)
        return y[:, :self.out_channels] if self.conv.out_channels != self.out_channels else y
