"""The roofline of each conv layer: how close its forward pass comes to what the device's roofs allow.

For a layer of arithmetic intensity I (forward FLOPs per byte moved, ``ConvLayer.intensity``) on a device with peak
compute P (FLOP/s) and memory bandwidth B (bytes/s), the attainable rate is min(P, B·I). The layer is memory-bound
when I is below the ridge point P/B and compute-bound at or above it (at the ridge both roofs give P). Its achieved
rate is its forward FLOPs over its forward time; the percentage of the roofline is achieved / attainable.
"""

from __future__ import annotations

import enum
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from convdoctor.analyzer.conv.layers import ConvAnalysis, ConvLayer
from convdoctor.analyzer.conv.peaks import Peaks, trace_peaks

FAST_ALGORITHM = re.compile(r"winograd|fft", re.IGNORECASE)  # kernels that compute a conv with fewer multiplies


class Bound(str, enum.Enum):
    """Which roof caps a layer."""

    MEMORY = "memory"  # intensity below the ridge point: bandwidth × intensity < peak FLOP/s
    COMPUTE = "compute"  # at or above the ridge point


@dataclass(frozen=True)
class LayerRoofline:
    """One layer against the roofs, per forward call (FLOP/s are FLOPs per second)."""

    intensity: float  # FLOP/byte
    attainable_flops: float  # FLOP/s the roofs allow at this intensity
    achieved_flops: float  # FLOP/s the forward pass reached
    pct_of_roofline: float  # 100 × achieved / attainable; above 100 when a roof is not the true limit
    bound: Bound


def ridge_point(peaks: Peaks) -> float | None:
    """The intensity (FLOP/byte) where the memory roof meets the compute roof: peak FLOP/s / bandwidth."""
    return peaks.ridge_point


def roofline(layer: ConvLayer, peaks: Peaks) -> LayerRoofline | None:
    """The layer against ``peaks``; None when the peaks are unknown or for another dtype, or the layer's FLOPs,
    bytes or forward time are unknown.

    Achieved FLOP/s = forward FLOPs per call × calls per step / forward time per step (forward only: the FLOPs are
    forward FLOPs; the backward is left out).
    """
    ridge = peaks.ridge_point
    if ridge is None or layer.dtype != peaks.dtype or not layer.flops or not layer.bytes or layer.calls <= 0:
        return None
    intensity = layer.intensity
    if layer.flops <= 0 or layer.bytes <= 0 or not intensity or not math.isfinite(layer.forward_us) \
            or layer.forward_us <= 0:
        return None
    assert peaks.peak_flops_per_s is not None and peaks.bandwidth_bytes_per_s is not None
    attainable = min(peaks.peak_flops_per_s, peaks.bandwidth_bytes_per_s * intensity)
    achieved = layer.flops * layer.calls / (layer.forward_us * 1e-6)  # = flops × calls/step / (forward µs/step)
    bound = Bound.COMPUTE if intensity >= ridge else Bound.MEMORY
    return LayerRoofline(intensity=intensity, attainable_flops=attainable, achieved_flops=achieved,
                         pct_of_roofline=100.0 * achieved / attainable, bound=bound)


@dataclass
class Roofline:
    """The device's roofs and every layer against them."""

    peaks: Peaks
    layers: dict[str, LayerRoofline]  # by layer name; a layer without a roofline is absent
    notes: list[str] = field(default_factory=list)  # why there is no roofline, or none for some layers

    @property
    def bound_counts(self) -> dict[str, int]:
        """How many layers each roof caps: ``{"memory": 3, "compute": 5}``."""
        return {bound.value: sum(point.bound is bound for point in self.layers.values()) for bound in Bound}


def conv_dtype(analysis: ConvAnalysis) -> str:
    """The dtype of most conv time: the one whose roofs the report draws."""
    time_by_dtype: dict[str, float] = defaultdict(float)
    for layer in analysis.layers:
        time_by_dtype[layer.dtype] += layer.forward_us
    return max(time_by_dtype, key=lambda d: time_by_dtype[d]) if time_by_dtype else "float32"


def analyze_roofline(analysis: ConvAnalysis) -> Roofline:
    """The peaks a trace's device has for its conv dtype, and each layer's roofline."""
    profile = analysis.profile
    dtype = conv_dtype(analysis)
    peaks = trace_peaks(profile.environment, profile.device_properties, profile.has_device_events, dtype)
    result = Roofline(peaks=peaks, layers={})
    if not analysis.layers:
        return result
    if not peaks.known:
        result.notes.append(f"No roofline: {peaks.description}.")
        return result
    for layer in analysis.layers:
        point = roofline(layer, peaks)
        if point is not None:
            result.layers[layer.name] = point
    other = [layer.name for layer in analysis.layers if layer.dtype != dtype]
    if other:
        result.notes.append(f"{len(other)} layer(s) not in {dtype} have no roofline (the roofs drawn are for "
                            f"{dtype}): {_first(other)}")
    above = [layer for layer in analysis.layers if layer.name in result.layers
             and result.layers[layer.name].pct_of_roofline > 100.0]
    fewer_multiplies = [layer.name for layer in above if any(FAST_ALGORITHM.search(k) for k in layer.kernel_names)]
    if fewer_multiplies:
        result.notes.append(f"{len(fewer_multiplies)} layer(s) run above the roofline because their Winograd/FFT "
                            "kernels do fewer multiplications than the direct-convolution FLOPs counted here: "
                            + _first(fewer_multiplies))
    if peaks.others_busy is not None:
        result.notes.append(f"The roofs were measured while other processes kept {peaks.others_busy:.1f} cores busy "
                            "(the wait for quiet ran out): they may read low, and each layer's share of them high.")
    others = [layer.name for layer in above if layer.name not in fewer_multiplies]
    if others:
        roof = ("the measured matmul and copy are practical roofs, not the hardware's limits"
                if peaks.source.value == "measured"
                else f"faster than the datasheet's {dtype} roof: check the dtype and TF32 setting the roof assumes")
        if peaks.others_busy is not None:
            roof = "the roofs were measured under contention and read low"
        result.notes.append(f"{len(others)} layer(s) run above the roofline ({roof}): {_first(others)}")
    return result


def _first(names: list[str], count: int = 3) -> str:
    return ", ".join(names[:count]) + ("…" if len(names) > count else "")
