"""What convdoctor records of the capture in a trace's metadata (``METADATA_KEY``): the settings that decide conv
speed but that a trace does not otherwise hold, the machine's peaks, the job's shape, the allocator's state.

One typed record, written by capture and read back from any trace: a field a trace does not hold, or holds as a
value of another type (a trace from elsewhere, an older convdoctor, a hand edit), reads as None.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class RecordedEnvironment:
    """The capture's environment as a trace records it; every field None when the trace does not say."""

    torch_version: str | None = None
    model_file: str | None = None
    mode: str | None = None  # "eval" or "train"
    batch_size: int | None = None
    dtype: str | None = None
    device: str | None = None  # "cpu", "cuda:0"
    device_name: str | None = None
    allocator: str | None = None  # the host allocator the profiled process ran with
    threads: int | None = None  # intra-op threads
    available_cores: int | None = None
    cudnn_benchmark: bool | None = None
    cudnn_allow_tf32: bool | None = None
    matmul_allow_tf32: bool | None = None
    cudnn_deterministic: bool | None = None
    mkldnn_enabled: bool | None = None
    cpu_capability: str | None = None  # the vector ISA ATen/oneDNN kernels use
    mkldnn_bf16_supported: bool | None = None  # torch.ops.mkldnn._is_mkldnn_bf16_supported()
    mkldnn_fp16_supported: bool | None = None
    cpu_low_precision_flags: str | None = None  # bf16/fp16 flags /proc/cpuinfo lists, space-separated ("": none)
    peak_flops: float | None = None  # FLOP/s
    peak_bandwidth: float | None = None  # bytes/s
    peaks_source: str | None = None  # "measured" (CPU) or "datasheet" (GPU)
    peaks_dtype: str | None = None
    peaks_description: str | None = None
    peaks_others_busy: float | None = None  # cores other processes kept busy while the CPU peaks were measured,
    # when that contended (capture.contention): the roofs may read low
    rank: int | None = None  # of a data-parallel job
    world_size: int | None = None
    backend: str | None = None
    ddp_bucket_cap_mb: int | float | None = None
    ddp_gradient_as_bucket_view: bool | None = None
    ddp_static_graph: bool | None = None
    ddp_find_unused_parameters: bool | None = None
    minor_faults_per_step: int | None = None  # page faults of a warm step with the process's own allocator
    heap_kept: bool | None = None  # glibc's thresholds fixed for tracing and measuring (host_allocator.keep_heap)
    unprofiled_step_us: float | None = None  # the median step time without the profiler

    @classmethod
    def from_metadata(cls, recorded: Mapping[str, Any]) -> RecordedEnvironment:
        """The fields a trace's convdoctor metadata holds with values of their type; None for the others."""
        return cls(**{name: _typed(recorded.get(name), kinds) for name, kinds in _FIELD_KINDS.items()})

    def to_metadata(self) -> dict[str, Any]:
        """The fields that are set, as capture writes them into the trace."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    @property
    def recorded(self) -> bool:
        """Whether the trace holds anything convdoctor recorded (it was captured by `convdoctor profile`)."""
        return any(getattr(self, f.name) is not None for f in fields(self))


def _kinds(annotation: Any) -> tuple[type, ...]:
    """The non-None types of an ``X | None`` annotation."""
    return tuple(t for t in typing.get_args(annotation) if t is not types.NoneType)


_FIELD_KINDS = {f.name: _kinds(hint) for f, hint in
                zip(fields(RecordedEnvironment), typing.get_type_hints(RecordedEnvironment).values())}


def _typed(value: Any, kinds: tuple[type, ...]) -> Any:
    """``value`` when it is of one of ``kinds`` (an int is a float too; a bool is neither; floats finite); else None."""
    if isinstance(value, bool):
        return value if bool in kinds else None
    if isinstance(value, int) and (int in kinds or float in kinds):
        if not -(2**63) <= value < 2**63:  # beyond int64: no setting convdoctor records, and beyond a float's range
            return None
        return value if int in kinds else float(value)
    if isinstance(value, float) and float in kinds:
        return value if math.isfinite(value) else None
    if isinstance(value, str) and str in kinds:
        return value
    return None
