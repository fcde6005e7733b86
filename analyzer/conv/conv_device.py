"""Which device ran a trace's convolutions, and what the trace says of it (``deviceProperties``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator

from convdoctor.analyzer.conv.layers import is_conv_backward_node, is_conv_op
from convdoctor.analyzer.trace.profile import EventKind, Kernel, Op, Profile


def conv_device(profile: Profile) -> int | None:
    """The device that ran the most conv kernel time (forward and backward).

    On a trace of one device (most), the first conv kernel answers: the others need not be looked for.
    """
    if len({kernel.device for kernel in profile.kernels}) == 1:
        return next((kernel.device for kernel in conv_kernels(profile)), None)
    time: dict[int | None, float] = defaultdict(float)
    for kernel in conv_kernels(profile):
        time[kernel.device] += kernel.dur_us
    if not time:
        return None
    return max(time, key=lambda device: time[device])


def conv_kernels(profile: Profile) -> Iterator[Kernel]:
    """The compute kernels launched in a conv op or a conv backward node, in trace order."""
    in_conv: dict[Op, bool] = {}  # per event: it or an event around it is a conv
    compute = EventKind.KERNEL
    for kernel in profile.kernels:
        if kernel.kind is not compute or kernel.launcher is None:
            continue
        known = in_conv.get(kernel.launcher)  # most launchers launch several kernels: no call for those
        if known or (known is None and _in_conv(kernel.launcher, in_conv)):
            yield kernel


def _in_conv(op: Op, known: dict[Op, bool]) -> bool:
    """Whether ``op`` or an event around it is a conv op or a conv backward node; ``known`` remembers the answer
    of each event on the way up, so each event is looked at once."""
    below: list[Op] = []  # the events looked at on the way up and not yet remembered
    node: Op | None = op
    while node is not None:
        answer = known.get(node)
        if answer is not None:
            break
        below.append(node)
        if is_conv_op(node.name) or is_conv_backward_node(node.name):
            answer = True
            break
        node = node.parent
    else:
        answer = False
    for event in below:
        known[event] = answer
    return answer


def device_properties(profile: Profile, device: int | None) -> dict[str, Any] | None:
    """The ``deviceProperties`` entry of ``device`` (its ``id``, else its position), or None."""
    if device is None:
        return None
    by_id = next((p for p in profile.device_properties if p.get("id") == device), None)
    if by_id is not None:
        return by_id
    positional = profile.device_properties[device] if device < len(profile.device_properties) else None
    return positional if positional is not None and "id" not in positional else None
