"""How much faster each leaf module runs in channels_last, timed on the live workload at capture time.

The trace says how long each layer takes in the layout it runs in, never how long it would take in the other.
The probe runs one step with hooks that keep the arguments of every leaf module called on a 4-D/5-D tensor,
then times each distinct (module class, settings, argument shapes) alone, a copy in its current layout against
a copy in channels_last, in interleaved rounds (forward under no_grad in eval; forward and backward in train).
Only the ratio of the two is used: the leaf's time in the trace times ``1 - channels_last / current`` is what
channels_last is predicted to save there (CD101's ``probed_saving``), the design's "local % of the layer ×
the layer's share of time".

The result is recorded in the trace's convdoctor metadata (``trace.probe_record``), keyed by module scope name,
so that an offline ``analyze`` of the same traces predicts the same.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

from convdoctor.analyzer.trace.probe_record import LeafLayoutTime

if TYPE_CHECKING:  # torch is imported when the probe runs: reading a recorded probe needs no torch
    import torch
    from torch import nn

    from convdoctor.analyzer.capture.workload import Workload

WARMUP_CALLS = 2
ROUNDS = 7  # interleaved rounds per leaf, at most
MIN_ROUNDS = 3
LEAF_BUDGET_S = 0.5  # after MIN_ROUNDS, a leaf gets no more rounds once its timing has taken this long


def time_leaf_layouts(workload: Workload, rounds: int = ROUNDS) -> dict[str, LeafLayoutTime]:
    """Each leaf module called on a 4-D/5-D tensor not already in channels_last, by qualified name, timed both ways.

    Leaves that fail alone (a module that needs its parent's state) are left out. The workload is not modified.
    """
    calls = _leaf_calls(workload)
    timed: dict[tuple[Any, ...], LeafLayoutTime | None] = {}
    probed = {}
    for name, (module, args, kwargs, key) in calls.items():
        if key not in timed:
            try:
                timed[key] = _time_both(module, args, kwargs, workload, rounds)
            except (RuntimeError, TypeError, ValueError):
                timed[key] = None
        if timed[key] is not None:
            probed[name] = timed[key]
    return probed


def _leaf_calls(workload: Workload) -> dict[str, tuple[nn.Module, tuple, dict, tuple[Any, ...]]]:
    """The first call of each leaf module on a spatial tensor in one step: its module, copies of its arguments
    (taken before it runs: in-place modules change them) and the key under which equal calls share a timing."""
    from convdoctor.analyzer.capture.workload import make_step

    run = workload.copy()
    calls: dict[str, tuple[nn.Module, tuple, dict, tuple[Any, ...]]] = {}
    arguments: dict[tuple[Any, ...], tuple[tuple, dict]] = {}  # one copy per key: equal calls share it
    handles = []

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if _is_tensor(a)]
            spatial = [t for t in tensors if t.is_floating_point() and t.dim() in (4, 5)]
            if name in calls or not spatial or all(_is_channels_last(t) for t in spatial):
                return
            key = (type(module).__qualname__, module.extra_repr(),
                   tuple((tuple(t.shape), t.stride(), t.dtype) for t in tensors))
            if key not in arguments:
                arguments[key] = (_detached(args), _detached(kwargs))
            calls[name] = (module, *arguments[key], key)

        return hook

    for name, module in run.model.named_modules():
        if name and next(module.children(), None) is None:
            handles.append(module.register_forward_pre_hook(keep(name), with_kwargs=True))
    try:
        make_step(run)()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _time_both(module: nn.Module, args: tuple, kwargs: dict, workload: Workload, rounds: int) -> LeafLayoutTime:
    """Median time per call of a copy of the module in its layout and of one in channels_last, interleaved."""
    from convdoctor.analyzer.candidates.layout import channels_last
    from convdoctor.analyzer.capture.workload import Mode, time_step

    train = workload.mode is Mode.TRAIN
    current = _call(copy.deepcopy(module), args, kwargs, train)
    converted = _call(copy.deepcopy(module).to(memory_format=_format(args, kwargs)), _map(args, channels_last),
                      _map(kwargs, channels_last), train)
    for _ in range(WARMUP_CALLS):
        current(), converted()
    times: tuple[list[float], list[float]] = ([], [])
    started = time.perf_counter()
    for index in range(rounds):
        if index >= MIN_ROUNDS and time.perf_counter() - started > LEAF_BUDGET_S:
            break
        order = (0, 1) if index % 2 == 0 else (1, 0)  # ABBA: neither side always runs first
        for side in order:
            times[side].append(time_step((current, converted)[side], workload.device))
    return LeafLayoutTime(statistics.median(times[0]) * 1e6, statistics.median(times[1]) * 1e6)


def _call(module: nn.Module, args: tuple, kwargs: dict, train: bool) -> Callable[[], None]:
    """One call of the module: its forward under no_grad, or in train its forward and a backward from its output."""
    import torch

    module.train(train)
    if not train:
        def forward() -> None:
            with torch.no_grad():
                module(*args, **kwargs)

        return forward
    leaves = _map(args, lambda t: t.detach().requires_grad_(t.is_floating_point()))
    inplace = bool(getattr(module, "inplace", False))  # nn.ReLU(inplace=True) and friends: a leaf cannot be changed

    def forward_backward() -> None:
        inputs = _map(leaves, lambda t: t.clone()) if inplace else leaves
        output = module(*inputs, **kwargs)
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.backward(torch.ones_like(output))

    return forward_backward


def _format(args: tuple, kwargs: dict) -> torch.memory_format:
    import torch

    five_d = any(_is_tensor(a) and a.dim() == 5 for a in (*args, *kwargs.values()))
    return torch.channels_last_3d if five_d else torch.channels_last


def _is_channels_last(tensor: torch.Tensor) -> bool:
    """In channels_last and not also contiguous (a tensor of one channel or 1x1 pixels is both)."""
    import torch

    fmt = torch.channels_last_3d if tensor.dim() == 5 else torch.channels_last
    return tensor.is_contiguous(memory_format=fmt) and not tensor.is_contiguous()


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _detached(value: Any) -> Any:
    return _map(value, lambda t: t.detach().clone())


def _map(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    from convdoctor.analyzer.capture.workload import map_tensors

    return map_tensors(value, fn)
