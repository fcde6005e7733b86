"""Synchronizations in the profiled steps: the host blocked until the device caught up.

A synchronization is a runtime call that blocks the host (``cudaDeviceSynchronize``, ``cudaStreamSynchronize``,
``cudaEventSynchronize``, a synchronous ``cudaMemcpy``, and their HIP names); its time blocked is the call's
duration. Each is charged to the outermost CPU operator around it, the call the program made: ``aten::item`` and
``aten::_local_scalar_dense`` (``.item()``), ``aten::nonzero``, ``aten::to``/``aten::copy_`` (``.cpu()``, a copy
from pageable memory), or none (``torch.cuda.synchronize()``). With Python stacks in the trace (``with_stack``),
the innermost frame outside torch's own files names the user function (file and first line, as Kineto
names a frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from convdoctor.analyzer.step.pageable_copies import PAGEABLE_HTOD
from convdoctor.analyzer.trace.profile import EventKind, Op, Profile

SYNC_CALLS = frozenset({"cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                        "cuCtxSynchronize", "cuStreamSynchronize", "cuEventSynchronize",
                        "hipDeviceSynchronize", "hipStreamSynchronize", "hipEventSynchronize", "hipMemcpy"})
HOST_READS = frozenset({"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::to", "aten::_to_copy",
                        "aten::copy_", "aten::is_nonzero", "aten::masked_select", "aten::unique"})
NO_OPERATOR = "(no operator: a direct call such as torch.cuda.synchronize())"
# A frame of torch, the standard library or an installed package: not the user's code.
LIBRARY_FRAME = re.compile(r"(^|[\\/])(torch|site-packages|dist-packages|lib[\\/]python[0-9.]+)[\\/]|^<built-in")
TOP_SITES = 20


@dataclass(frozen=True)
class SyncSite:
    """The synchronizations of one kind at one place: the same call under the same operator and user line."""

    call: str  # the runtime call
    operator: str  # the outermost CPU operator around it, or NO_OPERATOR
    host_read: bool  # the operator reads a device value to the host (``.item()``, ``.cpu()``, ``nonzero``...)
    pageable_copy: bool  # the operator also copied from pageable memory to the device (the copy's own wait)
    source: str | None  # the user function, ``train.py(42): step`` (its first line); None without Python stacks
    count: int
    blocked_us: float  # summed duration of the calls


@dataclass(frozen=True)
class SyncView:
    """The synchronizations inside the profiled steps."""

    steps: int
    count: int
    blocked_us: float
    sites: list[SyncSite]  # the TOP_SITES that blocked longest
    sites_left_out: int
    has_python_stacks: bool
    pageable_copy_count: int  # of ``count``, those under an operator that copied from pageable memory
    pageable_copy_blocked_us: float  # their time blocked


def synchronizations(profile: Profile) -> SyncView:
    """The synchronizations inside the profiled steps (the whole traced span when the trace marks no steps)."""
    spans = profile.step_spans
    stacks = bool(profile.ops_by_kind[EventKind.PYTHON])
    sites: dict[tuple[str, str, str | None, bool], list[float]] = {}
    for op in profile.ops_by_kind[EventKind.RUNTIME]:
        if op.name not in SYNC_CALLS or not _inside(op, spans):
            continue
        operator = outermost_operator(op)
        key = (op.name, operator.name if operator else NO_OPERATOR, user_frame(op) if stacks else None,
               operator is not None and _copies_pageable(operator))
        row = sites.setdefault(key, [0, 0.0])
        row[0] += 1
        row[1] += op.dur_us
    ranked = sorted(sites.items(), key=lambda item: item[1][1], reverse=True)
    return SyncView(
        steps=len(spans), count=sum(int(r[0]) for r in sites.values()), blocked_us=sum(r[1] for r in sites.values()),
        sites=[SyncSite(call, operator, operator in HOST_READS, pageable, source, int(r[0]), r[1])
               for (call, operator, source, pageable), r in ranked[:TOP_SITES]],
        sites_left_out=max(0, len(ranked) - TOP_SITES), has_python_stacks=stacks,
        pageable_copy_count=sum(int(r[0]) for key, r in sites.items() if key[3]),
        pageable_copy_blocked_us=sum(r[1] for key, r in sites.items() if key[3]))


def outermost_operator(op: Op) -> Op | None:
    """The outermost CPU operator around an event (not a ``ProfilerStep#N``, an operator in some PyTorch versions),
    None when there is none."""
    found = None
    for ancestor in op.ancestors():
        if ancestor.kind is EventKind.CPU_OP and not ancestor.name.startswith("ProfilerStep#"):
            found = ancestor
    return found


def user_frame(op: Op) -> str | None:
    """The innermost Python frame around an event that is the user's code (not torch, a package or the standard
    library), as the trace names it (``train.py(42): step``); None when there is none."""
    for ancestor in op.ancestors():
        if ancestor.kind is EventKind.PYTHON and not LIBRARY_FRAME.search(ancestor.name):
            return ancestor.name
    return None


def _copies_pageable(operator: Op) -> bool:
    """Whether the operator, or one nested in it, copied from pageable memory to the device."""
    return any(PAGEABLE_HTOD.search(k.name) for op in (operator, *operator.descendants()) for k in op.kernels)


def _inside(op: Op, spans: list[tuple[int | None, float, float]]) -> bool:
    return any(start <= op.ts_us < end for _, start, end in spans)
