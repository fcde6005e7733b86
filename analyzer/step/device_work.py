"""What the whole-step views share: device work per stream, and each device event's launching runtime call."""

from __future__ import annotations

from collections import defaultdict

from convdoctor.analyzer.trace.profile import EventKind, Kernel, Op, Profile

StreamKey = tuple[int | None, int | None]  # (device, stream)


def runtime_calls(profile: Profile) -> dict[int, Op]:
    """The CUDA runtime call of each correlation id (``cudaLaunchKernel``, ``cudaMemcpyAsync``...)."""
    call = EventKind.RUNTIME
    return {op.correlation: op for op in profile.ops if op.kind is call and op.correlation is not None}


def by_stream(profile: Profile) -> dict[StreamKey, list[Kernel]]:
    """The device events (kernels, memcpys, memsets) of each (device, stream), sorted by start."""
    streams: dict[StreamKey, list[Kernel]] = defaultdict(list)
    for kernel in profile.kernels:  # sorted by start already
        streams[(kernel.device, kernel.stream)].append(kernel)
    return dict(sorted(streams.items(), key=lambda item: (_key(item[0][0]), _key(item[0][1]))))


def _key(value: int | None) -> int:
    return -1 if value is None else value
