"""What the whole-step views share: device work per stream (the runtime call of each is ``Profile.runtime_calls``)."""

from __future__ import annotations

from collections import defaultdict

from convdoctor.analyzer.trace.profile import Kernel, Profile

StreamKey = tuple[int | None, int | None]  # (device, stream)


def by_stream(profile: Profile) -> dict[StreamKey, list[Kernel]]:
    """The device events (kernels, memcpys, memsets) of each (device, stream), sorted by start."""
    streams: dict[StreamKey, list[Kernel]] = defaultdict(list)
    for kernel in profile.kernels:  # sorted by start already
        streams[(kernel.device, kernel.stream)].append(kernel)
    return dict(sorted(streams.items(), key=lambda item: (_key(item[0][0]), _key(item[0][1]))))


def _key(value: int | None) -> int:
    return -1 if value is None else value
