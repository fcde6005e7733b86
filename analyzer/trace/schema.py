"""The trace schema, written once: each ``args`` field the parser reads, the keys it is spelled as across PyTorch
versions, how the tolerant reading types any value (``typed``), and the strict type the fast decoder checks while
it decodes (``strict``). The fast decoder's structs are generated from the same table, so the two readings cannot
drift apart: a value the strict type takes is one the typing function keeps unchanged.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Callable

import msgspec

# The limits the typing functions and the strict types share.
MAX_TIME_US = float(2**63)  # no int64 clock, in µs or even ns, goes beyond: sums and spans of times stay finite
TIME_RESOLUTION_US = 0.001  # Kineto's clock counts nanoseconds
EXACT_FLOAT_INT = 2**53  # ints up to here survive a round trip through a float unchanged
MAX_DIM = 2**63 - 1  # tensor sizes and strides are int64

Time = Annotated[float, msgspec.Meta(ge=-MAX_TIME_US, le=MAX_TIME_US)]
Dim = Annotated[int, msgspec.Meta(ge=0, le=MAX_DIM)]
LaunchDim = Annotated[int, msgspec.Meta(ge=1, le=EXACT_FLOAT_INT)]
Count = Annotated[int, msgspec.Meta(ge=0, le=EXACT_FLOAT_INT)]
Shapes = list[list[Dim]]  # one tensor's sizes per input
ListShapes = list[list[Dim | list[Dim]]]  # ...or, for a TensorList input, a list of sizes per tensor
Dim3 = tuple[LaunchDim, LaunchDim, LaunchDim]



def time_or_none(value: Any) -> float | None:
    """A time in µs (a number, or a number written as a string) within an int64 clock's range, or None.

    A magnitude below the clock's 1 ns resolution is 0: nothing divides by a sub-nanosecond duration or span.
    """
    if type(value) is float:  # the common case, first
        number = value
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    else:
        try:
            number = float(value)
        except (ValueError, OverflowError):  # not a number; an int too large for a float
            return None
    if not abs(number) <= MAX_TIME_US:  # also NaN
        return None
    return number if abs(number) >= TIME_RESOLUTION_US else 0.0


def int_or_none(value: Any) -> int | None:
    """An id or index (an integer, an integral float, or digits in a string), or None."""
    if type(value) is int:  # the common case, first
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None  # also rejects NaN and infinities
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:  # not digits, or more digits than Python converts
            return None
    return None


def count_or_none(value: Any) -> int | None:
    """A non-negative integer count (registers, bytes), or None for a missing or impossible value."""
    if type(value) is int and 0 <= value <= EXACT_FLOAT_INT:  # the common case: the same int as through a float
        return value
    number = rate_or_none(value)
    return int(number) if number is not None else None


def rate_or_none(value: Any) -> float | None:
    """A finite non-negative number (blocks or warps per SM), or None.

    Kineto writes ``inf`` blocks per SM when it knows no SM count, and -1 (written as ``-99`` %) as the occupancy
    when its occupancy calculator fails: neither is a value.
    """
    if type(value) is float:  # the common case, first
        return value if math.isfinite(value) and value >= 0 else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) and number >= 0 else None


def dim3_or_none(value: Any) -> tuple[int, int, int] | None:
    """A ``[x, y, z]`` launch dimension as a tuple of positive ints, or None."""
    if not isinstance(value, list) or len(value) != 3:
        return None
    if all(type(v) is int and 1 <= v <= EXACT_FLOAT_INT for v in value):  # the common case, checked at once
        return (value[0], value[1], value[2])
    dims = tuple(count_or_none(v) for v in value)
    if any(d is None or d < 1 for d in dims):
        return None
    return dims  # type: ignore[return-value]


def percent_or_none(value: Any) -> float | None:
    number = rate_or_none(value)
    return number if number is not None and number <= 100 else None


def string_or_none(value: Any) -> str | None:
    return sys.intern(value) if isinstance(value, str) else None


def strings(value: Any) -> list[str]:
    """``Input type`` / ``Concrete Inputs``: one string per input; any other value becomes ``""`` (not given).

    The strings are interned: a few hundred type names and values repeat over millions of events.
    """
    if not isinstance(value, list):
        return []
    return [sys.intern(v) if isinstance(v, str) else "" for v in value]


def typed_shapes(value: Any) -> list[Any]:
    """``Input Dims`` / ``Input Strides``: one entry per operator input, typed.

    An entry is a tensor's sizes (a list of ints in 0..2**63-1; ``[]`` for a scalar or a non-tensor input) or, for a
    TensorList input, a list of such lists. An entry of any other form becomes ``[]``: unknown, like a non-tensor.
    """
    if not isinstance(value, list):
        return []
    if all(_shape_entry(entry) is entry for entry in value):
        return value  # keep the trace's list when it is fine
    typed = [_shape_entry(entry) for entry in value]
    return value if all(t is v for t, v in zip(typed, value)) else typed  # keep the trace's list when it is fine


def _shape_entry(entry: Any) -> list[Any]:
    if not isinstance(entry, list):
        return []
    if all(type(v) is int and 0 <= v <= MAX_DIM for v in entry):  # the common case, without a call per dim
        return entry
    if all(_is_dim(v) for v in entry):
        return entry
    if all(isinstance(v, list) and all(_is_dim(d) for d in v) for v in entry):
        return entry  # a TensorList: one shape per tensor
    return []


def _is_dim(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_DIM


@dataclass(frozen=True)
class ArgField:
    """One typed field of an event's ``args``."""

    spellings: dict[str, str]  # the decoder's attribute for each raw key it is spelled as, first found wins
    typed: Callable[[Any], Any]  # the tolerant typing: a value of the wrong type becomes None or []
    strict: Any  # the type the fast decoder accepts (anything else sends the trace the tolerant way)
    strict_with_lists: Any = None  # the strict type when a trace holds TensorList shapes (shapes only)


# A value of the wrong type becomes the field's empty value (None or []), never an exception: the event is still
# placed, only that fact is unknown.
ARG_SCHEMA: dict[str, ArgField] = {
    "external_id": ArgField({"external_id": "External id", "external_id_lower": "external id"}, int_or_none, int),
    "correlation": ArgField({"correlation": "correlation"}, int_or_none, int),
    "sequence_number": ArgField({"sequence_number": "Sequence number"}, int_or_none, int),
    "input_dims": ArgField({"input_dims": "Input Dims", "input_dims_lower": "Input dims"}, typed_shapes, Shapes,
                           ListShapes),
    "input_types": ArgField({"input_types": "Input type"}, strings, tuple[str, ...]),
    "input_strides": ArgField({"input_strides": "Input Strides"}, typed_shapes, Shapes, ListShapes),
    "concrete_inputs": ArgField({"concrete_inputs": "Concrete Inputs"}, strings, tuple[str, ...]),
    "collective": ArgField({"collective": "Collective name"}, string_or_none, str),
    "message_elements": ArgField({"message_elements": "In msg nelems"}, count_or_none, Count),
    "message_dtype": ArgField({"message_dtype": "dtype"}, string_or_none, str),
    "device": ArgField({"device": "device"}, int_or_none, int),
    "stream": ArgField({"stream": "stream"}, int_or_none, int),
    # Kernel launch configuration and occupancy, as Kineto writes them (CUPTI kernel records).
    "grid": ArgField({"grid": "grid"}, dim3_or_none, Dim3),
    "block": ArgField({"block": "block"}, dim3_or_none, Dim3),
    "registers_per_thread": ArgField({"registers_per_thread": "registers per thread"}, count_or_none, Count),
    "shared_memory_bytes": ArgField({"shared_memory_bytes": "shared memory"}, count_or_none, Count),
    "blocks_per_sm": ArgField({"blocks_per_sm": "blocks per SM"}, rate_or_none, float),
    "warps_per_sm": ArgField({"warps_per_sm": "warps per SM"}, rate_or_none, float),
    "est_occupancy_pct": ArgField({"est_occupancy_pct": "est. achieved occupancy %"}, percent_or_none, float),
}
# The args of a ``[memory]`` instant, by field of ``MemoryEvent``: one spelling each, in every PyTorch version.
MEMORY_ARG_SCHEMA: dict[str, ArgField] = {
    "bytes": ArgField({"bytes": "Bytes"}, int_or_none, int),
    "total_allocated": ArgField({"total_allocated": "Total Allocated"}, int_or_none, int),
    "total_reserved": ArgField({"total_reserved": "Total Reserved"}, int_or_none, int),
    "device_type": ArgField({"device_type": "Device Type"}, int_or_none, int),
    "device_id": ArgField({"device_id": "Device Id"}, int_or_none, int),
}
MEMORY_EVENT_NAME = "[memory]"
ARG_KEYS: dict[str, tuple[str, ...]] = {name: tuple(f.spellings.values()) for name, f in ARG_SCHEMA.items()}
PARSED_ARG_KEYS = frozenset(key for keys in ARG_KEYS.values() for key in keys)
MEMORY_ARG_KEYS = frozenset(key for f in MEMORY_ARG_SCHEMA.values() for key in f.spellings.values())


def _struct_fields(with_lists: bool, schema: dict[str, ArgField] = ARG_SCHEMA) -> list[tuple[str, Any, Any]]:
    """One decoder attribute per spelling; a default of None means "absent" (a JSON null is not of the type, so it
    takes the tolerant way)."""
    return [(attr, (f.strict_with_lists or f.strict) if with_lists else f.strict, msgspec.field(name=key, default=None))
            for f in schema.values() for attr, key in f.spellings.items()
            if not with_lists or f.strict_with_lists is not None]


Args = msgspec.defstruct("Args", _struct_fields(False), frozen=True, gc=False, module=__name__)
Args.__doc__ = "The ``args`` keys the parser reads (ARG_SCHEMA), in each spelling."
ListArgs = msgspec.defstruct("ListArgs", _struct_fields(True), bases=(Args,), frozen=True, gc=False, module=__name__)
ListArgs.__doc__ = "``Args`` whose shapes may hold a TensorList input's (see ``ListShapes``)."
MemoryArgs = msgspec.defstruct("MemoryArgs", _struct_fields(False, MEMORY_ARG_SCHEMA), frozen=True, gc=False,
                               module=__name__)
MemoryArgs.__doc__ = "The ``args`` keys of a ``[memory]`` instant (MEMORY_ARG_SCHEMA)."
