"""Read a Kineto trace (JSON only, plain or gzip) into a Profile.

Only this module sees raw trace dicts. Key spellings differ across PyTorch versions (``Kernel``/``kernel``,
``Operator``/``cpu_op``, ``External id``/``external id``); the tables below map each to one typed field.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from convdoctor.analyzer.module_scope import parse_scope_name
from convdoctor.analyzer.profile import DEVICE_KINDS, EventKind, Kernel, Op, Profile, Step
from convdoctor.errors import TraceError

CATEGORY_KINDS: dict[str, EventKind] = {
    "operator": EventKind.CPU_OP,
    "cpu_op": EventKind.CPU_OP,
    "user_annotation": EventKind.ANNOTATION,
    "python_function": EventKind.PYTHON,
    "runtime": EventKind.RUNTIME,
    "cuda_runtime": EventKind.RUNTIME,
    "cuda_driver": EventKind.RUNTIME,
    "kernel": EventKind.KERNEL,
    "memcpy": EventKind.MEMCPY,
    "gpu_memcpy": EventKind.MEMCPY,
    "memset": EventKind.MEMSET,
    "gpu_memset": EventKind.MEMSET,
    "gpu_user_annotation": EventKind.GPU_ANNOTATION,
}
# Categories that carry no timed work worth typing (flows, markers, whole-trace spans).
IGNORED_CATEGORIES = frozenset({"trace", "async", "ac2g", "async_cpu_to_gpu", "overhead", "python_function_cpp"})

ARG_KEYS: dict[str, tuple[str, ...]] = {
    "external_id": ("External id", "external id"),
    "correlation": ("correlation",),
    "sequence_number": ("Sequence number",),
    "input_dims": ("Input Dims", "Input dims"),
    "input_types": ("Input type",),
    "input_strides": ("Input Strides",),
    "concrete_inputs": ("Concrete Inputs",),
    "device": ("device",),
    "stream": ("stream",),
    # Kernel launch configuration and occupancy, as Kineto writes them (CUPTI kernel records).
    "grid": ("grid",),
    "block": ("block",),
    "registers_per_thread": ("registers per thread",),
    "shared_memory_bytes": ("shared memory",),
    "blocks_per_sm": ("blocks per SM",),
    "warps_per_sm": ("warps per SM",),
    "est_occupancy_pct": ("est. achieved occupancy %",),
}

STEP_NAME = re.compile(r"^ProfilerStep#(\d+)$")
TRACE_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz")


def read_trace(path: str | Path) -> dict[str, Any]:
    """The trace's JSON object; a TraceError in one line when the file is missing, broken or foreign."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file; pass a *.pt.trace.json[.gz] file or a log dir")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                data = json.load(handle)
        else:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
    except (EOFError, OSError, zlib.error) as exc:
        raise TraceError(f"{path}: cannot be decompressed ({exc}); the file is truncated or not gzip") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: is not valid JSON ({exc}); re-export the trace") from exc
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise TraceError(f"{path}: is JSON but not a Kineto trace (no 'traceEvents' list)")
    return data


def load_profile(path: str | Path) -> Profile:
    """Read and parse one trace file."""
    return parse_trace(read_trace(path), str(path))


def parse_trace(data: dict[str, Any], trace_path: str = "<memory>") -> Profile:
    """Type the events of a Kineto trace, nest host events, and link device events to their launchers."""
    ops: list[Op] = []
    kernels: list[Kernel] = []
    unknown: Counter[str] = Counter()
    for raw in data["traceEvents"]:
        if not isinstance(raw, dict) or raw.get("ph") != "X":
            continue
        category = str(raw.get("cat", "")).lower()
        kind = CATEGORY_KINDS.get(category)
        if kind is None:
            if category not in IGNORED_CATEGORIES:
                unknown[category] += 1
            continue
        event = _typed_event(raw, kind)
        if event is None:
            continue
        (kernels if isinstance(event, Kernel) else ops).append(event)
    ops.sort(key=lambda op: (op.ts_us, -op.dur_us))
    kernels.sort(key=lambda k: k.ts_us)
    _nest(ops)
    _link_kernels(ops, kernels)
    steps = _steps(ops)
    metadata = {k: v for k, v in data.items() if k != "traceEvents"}
    props = data.get("deviceProperties")
    return Profile(
        trace_path=trace_path,
        ops=ops,
        kernels=kernels,
        steps=steps,
        device_properties=props if isinstance(props, list) else [],
        metadata=metadata,
        unknown_categories=dict(unknown),
    )


def _arg(args: dict[str, Any], field: str, default: Any = None) -> Any:
    for key in ARG_KEYS[field]:
        if key in args:
            return args[key]
    return default


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count_or_none(value: Any) -> int | None:
    """A non-negative integer count (registers, bytes), or None for a missing or impossible value."""
    number = _rate_or_none(value)
    return int(number) if number is not None else None


def _rate_or_none(value: Any) -> float | None:
    """A finite non-negative number (blocks or warps per SM), or None.

    Kineto writes ``inf`` blocks per SM when it knows no SM count, and -1 (written as ``-99`` %) as the occupancy
    when its occupancy calculator fails: neither is a value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _dim3_or_none(value: Any) -> tuple[int, int, int] | None:
    """A ``[x, y, z]`` launch dimension as a tuple of positive ints, or None."""
    if not isinstance(value, list) or len(value) != 3:
        return None
    dims = tuple(_count_or_none(v) for v in value)
    if any(d is None or d < 1 for d in dims):
        return None
    return dims  # type: ignore[return-value]


def _percent_or_none(value: Any) -> float | None:
    number = _rate_or_none(value)
    return number if number is not None and number <= 100 else None


def _typed_event(raw: dict[str, Any], kind: EventKind) -> Op | Kernel | None:
    try:
        ts_us = float(raw["ts"])
        dur_us = float(raw.get("dur", 0.0))
    except (KeyError, TypeError, ValueError):
        return None  # an event without a time cannot be placed; the rest of the trace still can
    name = str(raw.get("name", ""))
    args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
    if kind in DEVICE_KINDS:
        return Kernel(
            name=name,
            kind=kind,
            device=_int_or_none(_arg(args, "device")),
            stream=_int_or_none(_arg(args, "stream")),
            ts_us=ts_us,
            dur_us=dur_us,
            correlation=_int_or_none(_arg(args, "correlation")),
            grid=_dim3_or_none(_arg(args, "grid")),
            block=_dim3_or_none(_arg(args, "block")),
            registers_per_thread=_count_or_none(_arg(args, "registers_per_thread")),
            shared_memory_bytes=_count_or_none(_arg(args, "shared_memory_bytes")),
            blocks_per_sm=_rate_or_none(_arg(args, "blocks_per_sm")),
            warps_per_sm=_rate_or_none(_arg(args, "warps_per_sm")),
            est_occupancy_pct=_percent_or_none(_arg(args, "est_occupancy_pct")),
        )
    if kind is EventKind.GPU_ANNOTATION:
        return None
    scope = parse_scope_name(name) if kind is EventKind.ANNOTATION else None
    return Op(
        name=name,
        kind=kind,
        pid=str(raw.get("pid", "")),
        tid=str(raw.get("tid", "")),
        ts_us=ts_us,
        dur_us=dur_us,
        external_id=_int_or_none(_arg(args, "external_id")),
        correlation=_int_or_none(_arg(args, "correlation")),
        sequence_number=_int_or_none(_arg(args, "sequence_number")),
        input_dims=_list(_arg(args, "input_dims")),
        input_types=_list(_arg(args, "input_types")),
        input_strides=_list(_arg(args, "input_strides")),
        concrete_inputs=_list(_arg(args, "concrete_inputs")),
        scope=scope,
    )


def _nest(ops: list[Op]) -> None:
    """Build parent/child links per thread from time containment, and the module scope of each event."""
    by_thread: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in ops:
        by_thread[(op.pid, op.tid)].append(op)
    for thread_ops in by_thread.values():
        stack: list[Op] = []
        for op in thread_ops:  # already sorted by start, longest first
            while stack and op.ts_us >= stack[-1].end_us:
                stack.pop()
            if stack:
                op.parent = stack[-1]
                stack[-1].children.append(op)
                holder = op.parent if op.parent.scope is not None else op.parent.module_call
                op.module_call = holder
                op.module = holder.scope if holder is not None else None
            stack.append(op)


def _link_kernels(ops: list[Op], kernels: list[Kernel]) -> None:
    """Link each device event to the operator around the runtime call with the same correlation id."""
    runtime_by_correlation = {
        op.correlation: op for op in ops if op.kind is EventKind.RUNTIME and op.correlation is not None
    }
    for kernel in kernels:
        runtime = runtime_by_correlation.get(kernel.correlation)
        if runtime is None:
            continue
        launcher = next((a for a in runtime.ancestors() if a.kind is EventKind.CPU_OP), None)
        if launcher is not None:
            kernel.launcher = launcher
            launcher.kernels.append(kernel)


def _steps(ops: list[Op]) -> list[Step]:
    steps = []
    for op in ops:
        if op.kind in (EventKind.ANNOTATION, EventKind.CPU_OP) and (match := STEP_NAME.match(op.name)):
            steps.append(Step(number=int(match.group(1)), ts_us=op.ts_us, dur_us=op.dur_us))
    return sorted(steps, key=lambda s: s.ts_us)



def find_traces(path: str | Path) -> list[Path]:
    """The trace file itself, or every Kineto trace under a TensorBoard log dir (runs and workers), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TraceError(f"{path}: no such file or directory; pass a *.pt.trace.json[.gz] file or a log dir")
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TRACE_SUFFIXES)
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not found:
        raise TraceError(f"{path}: holds no *.pt.trace.json[.gz] files; pass the log dir torch.profiler wrote to")
    return found
