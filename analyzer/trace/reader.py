"""Read a Kineto trace (JSON only, plain or gzip) into a Profile.

Only this module sees raw trace dicts. Key spellings differ across PyTorch versions (``Kernel``/``kernel``,
``Operator``/``cpu_op``, ``External id``/``external id``); the tables below map each to one typed field.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import sys
import threading
import zlib
from collections import Counter
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

from convdoctor.analyzer.trace.collector import collector_paused
from convdoctor.analyzer.trace.fast import EventTyping, NotPlain, split_trace
from convdoctor.analyzer.trace.module_scope import parse_scope_name
from convdoctor.analyzer.trace.profile import (
    DEVICE_KINDS,
    SCOPE_KINDS,
    EventKind,
    Kernel,
    MemoryEvent,
    Op,
    Profile,
    Step,
)
from convdoctor.analyzer.trace.schema import (
    ARG_SCHEMA,
    MEMORY_ARG_KEYS,
    MEMORY_ARG_SCHEMA,
    MEMORY_EVENT_NAME,
    PARSED_ARG_KEYS,
    time_or_none,
)
from convdoctor.analyzer.trace.stream import GZIP_MAGIC, TraceStream, streamed_events
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

MAX_DEFLATE_RATIO = 1032  # deflate output is at most this many times its input

STEP_NAME = re.compile(r"^ProfilerStep#([0-9]{1,18})$")
TRACE_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz")


def read_trace(path: str | Path, *, slim: bool = False) -> dict[str, Any]:
    """The trace's JSON object; a TraceError in one line when the file is missing, broken or foreign.

    With ``slim``, each event is cut while it is decoded to what ``parse_trace`` reads (see ``_slim_event``), which
    parses to the same Profile from a fraction of the memory: most of a trace is call stacks, flows and memory
    instants.
    """
    return _decode(Path(path), _slim_event if slim else None)


def _decode(path: Path, hook: Callable[[dict[str, Any]], Any] | None) -> dict[str, Any]:
    """The trace's JSON object, each object passed through ``hook`` as it is decoded; TraceError as ``read_trace``."""
    return _parse_json(_text(_read_bytes(path), path), path, hook)


def _read_bytes(path: Path) -> bytes:
    """The trace file's bytes, decompressed when it is gzipped; a TraceError in one line when it cannot be read."""
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file; pass a *.pt.trace.json[.gz] file or a log dir")
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file; pass a *.pt.trace.json[.gz] file or a log dir")
    try:
        if path.stat().st_size == 0:
            raise TraceError(f"{path}: is empty (0 bytes); the profiler did not finish writing it, or the copy failed")
        raw = path.read_bytes()  # in one read, and decompressed in one call: faster than a stream of chunks
        return _gunzip(raw) if path.name.endswith(".gz") else raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise TraceError(f"{path}: cannot be decompressed ({exc}); the file is truncated or not gzip") from exc
    except OSError as exc:  # permissions, a file that vanished, an I/O error
        raise TraceError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


class Reading(NamedTuple):
    """The traces of a trace file or log dir grouped by run, and their reading, started in that order."""

    runs: list[list[Path]]
    reader: ReadAhead


def start_reading(path: str | Path) -> Reading:
    """Find the traces of ``path`` (see ``find_traces``) and start reading the first one; TraceError as there.

    A run is the folder its traces are in (TensorBoard's run; its workers are the files).
    """
    runs: dict[Path, list[Path]] = {}
    for trace in find_traces(path):
        runs.setdefault(trace.parent, []).append(trace)
    return Reading(list(runs.values()), ReadAhead(trace for run in runs.values() for trace in run))


class ReadAhead:
    """Trace files read in order, each on a background thread while the one before it is analyzed.

    zlib and file reads release the interpreter lock, so each file is gunzipped on another core (see
    ``TraceStream``): the first at once, each next one once the one before it has been read.
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = iter(paths)
        self._next: TraceStream | None = None
        self._start_next(None)

    def take(self, path: Path) -> TraceStream:
        """The stream of ``path``, the next file in order (for ``load_profile``)."""
        if self._next is None or self._next.path != path:
            raise ValueError(f"{path} is not the next trace to read")
        stream = self._next
        self._start_next(stream.thread)
        return stream

    def _start_next(self, after: threading.Thread | None) -> None:
        path = next(self._paths, None)
        self._next = None if path is None else TraceStream(path, after)


def _gunzip(raw: bytes) -> bytes:
    """``gzip.decompress(raw)``, in about 60% of its time on a large trace.

    zlib decompresses the first gzip member into one buffer of the length the file's trailer gives (no copy of
    the output, and zlib checks the member's CRC and length itself). When the file's trailer does not belong to
    that member (a file of several members, or bytes after it), gzip.decompress reads the file instead; that
    test is the trailer's length and CRC, so a last member that repeats the first byte for byte goes unseen.
    """
    size = int.from_bytes(raw[-4:], "little")
    if raw[:2] != GZIP_MAGIC or size > len(raw) * MAX_DEFLATE_RATIO:  # not gzip, or a trailer no member can have
        return gzip.decompress(raw)
    data = zlib.decompress(raw, wbits=31, bufsize=max(size, 1))  # 31: a gzip header and trailer
    if len(data) & 0xFFFFFFFF == size and zlib.crc32(data) == int.from_bytes(raw[-8:-4], "little"):
        return data
    return gzip.decompress(raw)


def _text(data: bytes, path: Path) -> str:
    """The trace's text: its bytes decoded as UTF-8; a TraceError in one line when they are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: is not valid JSON ({exc}); re-export the trace") from exc


def _parse_json(text: str, path: Path, hook: Callable[[dict[str, Any]], Any] | None) -> dict[str, Any]:
    """The trace's JSON object, each object passed through ``hook`` as it is decoded; a TraceError in one line
    when the text is not JSON or not a Kineto trace."""
    try:
        data = json.loads(text, object_hook=hook)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: is not valid JSON ({exc}); re-export the trace") from exc
    except ValueError as exc:  # valid JSON that Python will not read: an integer of more than 4300 digits
        raise TraceError(f"{path}: holds a number too long to read ({exc}); re-export the trace") from exc
    except RecursionError as exc:
        raise TraceError(f"{path}: is nested too deeply to be a Kineto trace ({exc})") from exc
    data = _as_object(data)
    _check_kineto(data, str(path))
    return data


def _as_object(data: Any) -> Any:
    """A trace in the Chrome trace format's JSON array form (the events alone: the earliest Kineto traces) as the
    object form holding them; any other value (an array holding no event among them) unchanged."""
    if isinstance(data, list) and any(_is_event(item) for item in data):
        return {"traceEvents": data}
    return data


def _is_event(item: Any) -> bool:
    """An item of an events' array: an event (an object with a phase), raw or typed."""
    return isinstance(item, (Op, Kernel, MemoryEvent)) or item is SKIPPED or (isinstance(item, dict) and "ph" in item)


def _check_kineto(data: Any, trace_path: str) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise TraceError(f"{trace_path}: is JSON but not a Kineto trace (neither a 'traceEvents' list nor an array "
                         "of events)")


def load_profile(path: str | Path, stream: TraceStream | None = None) -> Profile:
    """Read and parse one trace file: the same Profile as ``parse_trace(read_trace(path))``, faster and smaller.

    ``stream``: the file's reading, when it was started already (``ReadAhead``).

    Events are decoded straight into their typed fields while the file is gunzipped (``trace_stream``); a trace
    that reading does not take is decoded whole the same way (``trace_fast``), and a trace holding a value that
    decoding does not take is read the tolerant way, each event typed as soon as the ``json`` module decodes it
    (see ``_TypingHook``). The cyclic garbage collector is paused meanwhile (see ``collector_paused``).
    """
    path = Path(path)
    with collector_paused():
        typer = _EventTyper()
        typing = EventTyping(typer.kind)
        stream = stream or TraceStream(path)
        try:
            metadata = _metadata(streamed_events(stream.pieces(), typing))
        except (NotPlain, ValueError, RecursionError):
            pass  # read whole
        else:
            return _profile(metadata, typing.ops, typing.kernels, typing.memory, typer.unknown, str(path))
        finally:
            stream.close()
        data = _read_bytes(path)
        try:  # ASCII bytes are their own UTF-8 text (most traces): no copy decoded
            events, top, list_shapes = split_trace(data if data.isascii() else _text(data, path))
            metadata = _metadata(top)
        except (NotPlain, ValueError, RecursionError):
            pass  # read the tolerant way: the same result, or the TraceError that says what is wrong
        else:
            del data, top
            typer = _EventTyper()
            typing = EventTyping(typer.kind)
            typing.add(events, list_shapes)
            return _profile(metadata, typing.ops, typing.kernels, typing.memory, typer.unknown, str(path))
        hook = _TypingHook()
        data = _parse_json(_text(data, path), path, hook)
        events = data["traceEvents"]
        typed = [event for event in events if isinstance(event, (Op, Kernel, MemoryEvent))]
        if len(typed) + events.count(SKIPPED) == hook.events_seen:
            return _profile(data, *_split(typed), hook.typer.unknown, str(path))
        # An object taken for an event sits somewhere else than in the event list (inside an event's args, or
        # the metadata), where it must stay a JSON object: read again, cutting events to their parts only.
        return parse_trace(read_trace(path, slim=True), str(path))


def _metadata(top: dict[str, Any]) -> dict[str, Any]:
    """The top-level values other than the events, decoded (their events cut to what the parser reads)."""
    return {key: json.loads(bytes(raw), object_hook=_slim_event) for key, raw in top.items()}


SKIPPED = object()  # what _TypingHook leaves in place of an event that is not typed


class _TypingHook:
    """A ``json`` object hook that types each complete event as soon as it is decoded (an event's args are
    decoded before the event), and counts the objects it took for events."""

    def __init__(self) -> None:
        self.typer = _EventTyper()
        self.events_seen = 0

    def __call__(self, obj: dict[str, Any]) -> Any:
        if "ph" not in obj or "traceEvents" in obj:
            return obj
        self.events_seen += 1
        event = self.typer(obj) if obj["ph"] == "X" else _memory_event(obj)
        return SKIPPED if event is None else event


class _EventTyper:
    """Types complete (``ph`` X) events one by one, counting the categories it does not know."""

    def __init__(self) -> None:
        self.unknown: Counter[str] = Counter()
        self.categories: dict[str, tuple[str, EventKind | None]] = {}  # each spelling met, with its kind

    def __call__(self, raw: dict[str, Any]) -> Op | Kernel | None:
        kind = self.kind(raw.get("cat", ""))
        return None if kind is None else _typed_event(raw, kind)

    def kind(self, spelling: Any) -> EventKind | None:
        """The kind of a category spelling; None (and counted, unless ignored) for a category not known."""
        known = self.categories.get(spelling) if isinstance(spelling, str) else None
        if known is None:
            category = str(spelling).lower()
            known = (category, CATEGORY_KINDS.get(category))
            if isinstance(spelling, str):
                self.categories[spelling] = known
        category, kind = known
        if kind is None and category not in IGNORED_CATEGORIES:
            self.unknown[category] += 1
        return kind


def _slim_event(obj: dict[str, Any]) -> Any:
    """A JSON object as ``parse_trace`` needs it: an event cut to the keys it reads, None for an event it skips.

    A ``json`` object hook: it sees every object as soon as it is decoded (an event's args before the event), so
    the unread parts of a huge trace are freed at once instead of living as long as the whole trace. An object with
    a ``ph`` key is taken for an event; the others (the trace itself, device properties, recorded metadata) are kept
    whole. Names and input types are interned: a few hundred distinct strings repeat over millions of events.
    """
    if "ph" not in obj or "traceEvents" in obj:
        return obj
    if obj["ph"] != "X":  # parse_trace types complete events and [memory] instants only
        if obj["ph"] != "i" or obj.get("name") != MEMORY_EVENT_NAME:
            return None
        args = obj.get("args")
        if isinstance(args, dict) and not args.keys() <= MEMORY_ARG_KEYS:
            obj["args"] = {key: value for key, value in args.items() if key in MEMORY_ARG_KEYS}
        return obj
    # A fresh object from the decoder: cut in place, and only when it holds keys that are never read.
    if not obj.keys() <= PARSED_EVENT_KEYS:
        obj = {key: value for key, value in obj.items() if key in PARSED_EVENT_KEYS}
    name = obj.get("name")
    if isinstance(name, str):
        obj["name"] = sys.intern(name)
    args = obj.get("args")
    if isinstance(args, dict):
        if not args.keys() <= PARSED_ARG_KEYS:
            obj["args"] = args = {key: value for key, value in args.items() if key in PARSED_ARG_KEYS}
        types = args.get("Input type")
        if isinstance(types, list):
            args["Input type"] = [sys.intern(t) if isinstance(t, str) else t for t in types]
    return obj


def parse_trace(data: dict[str, Any], trace_path: str = "<memory>") -> Profile:
    """Type the events of a Kineto trace, nest host events, and link device events to their launchers.

    Events that cannot be typed (not a dict, no finite time) are left out; a ``data`` that is not a Kineto trace
    object is a TraceError.
    """
    data = _as_object(data)
    _check_kineto(data, trace_path)
    typer = _EventTyper()
    events = [typer(raw) if raw.get("ph") == "X" else _memory_event(raw)
              for raw in data["traceEvents"] if isinstance(raw, dict)]
    return _profile(data, *_split([event for event in events if event is not None]), typer.unknown, trace_path)


def _split(events: list[Op | Kernel | MemoryEvent]) -> tuple[list[Op], list[Kernel], list[MemoryEvent]]:
    return ([e for e in events if isinstance(e, Op)], [e for e in events if isinstance(e, Kernel)],
            [e for e in events if isinstance(e, MemoryEvent)])


def _profile(data: dict[str, Any], ops: list[Op], kernels: list[Kernel], memory: list[MemoryEvent],
             unknown: Counter[str], trace_path: str) -> Profile:
    """The Profile of a trace's typed events (each list in trace order): sorted, nested and linked."""
    _sort_by_start(ops)
    kernels.sort(key=attrgetter("ts_us"))
    memory.sort(key=attrgetter("ts_us"))
    _nest(ops)
    metadata = {k: v for k, v in data.items() if k != "traceEvents"}
    props = data.get("deviceProperties")
    profile = Profile(
        trace_path=trace_path,
        ops=ops,
        kernels=kernels,
        steps=_steps(ops),
        device_properties=[p for p in props if isinstance(p, dict)] if isinstance(props, list) else [],
        metadata=metadata,
        unknown_categories=dict(unknown),
        memory_events=memory,
    )
    _link_kernels(profile.runtime_calls, kernels)
    return profile




PARSED_EVENT_KEYS = frozenset({"ph", "cat", "name", "ts", "dur", "pid", "tid", "args"})


def _field(args: dict[str, Any], name: str) -> Any:
    """The typed value of field ``name`` in an event's args (None or [] when absent or of the wrong type)."""
    field = ARG_SCHEMA[name]
    for key in field.spellings.values():
        if key in args:
            return field.typed(args[key])
    return field.typed(None)


def _memory_event(raw: dict[str, Any]) -> MemoryEvent | None:
    """A ``[memory]`` instant, typed; None for any other event, and for one without a time or a size."""
    if raw.get("ph") != "i" or raw.get("name") != MEMORY_EVENT_NAME:
        return None
    args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
    ts_us = time_or_none(raw.get("ts"))
    typed = {name: field.typed(args.get(key)) for name, field in MEMORY_ARG_SCHEMA.items()
             for key in field.spellings.values()}
    if ts_us is None or typed["bytes"] is None:
        return None
    return MemoryEvent(ts_us=ts_us, pid=sys.intern(str(raw.get("pid", ""))), tid=sys.intern(str(raw.get("tid", ""))),
                       **typed)


def _typed_event(raw: dict[str, Any], kind: EventKind) -> Op | Kernel | None:
    ts_us = time_or_none(raw.get("ts"))
    dur_us = time_or_none(raw.get("dur", 0.0))
    if ts_us is None or dur_us is None:
        return None  # an event without a time cannot be placed; the rest of the trace still can
    name = sys.intern(str(raw.get("name", "")))  # a few hundred names repeat over millions of events
    args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
    if kind in DEVICE_KINDS:
        return Kernel(
            name=name,
            kind=kind,
            device=_field(args, "device"),
            stream=_field(args, "stream"),
            ts_us=ts_us,
            dur_us=dur_us,
            correlation=_field(args, "correlation"),
            grid=_field(args, "grid"),
            block=_field(args, "block"),
            registers_per_thread=_field(args, "registers_per_thread"),
            shared_memory_bytes=_field(args, "shared_memory_bytes"),
            blocks_per_sm=_field(args, "blocks_per_sm"),
            warps_per_sm=_field(args, "warps_per_sm"),
            est_occupancy_pct=_field(args, "est_occupancy_pct"),
        )
    if kind is EventKind.GPU_ANNOTATION:
        return None
    scope = parse_scope_name(name) if kind in SCOPE_KINDS else None
    return Op(
        name=name,
        kind=kind,
        pid=sys.intern(str(raw.get("pid", ""))),
        tid=sys.intern(str(raw.get("tid", ""))),
        ts_us=ts_us,
        dur_us=dur_us,
        external_id=_field(args, "external_id"),
        correlation=_field(args, "correlation"),
        sequence_number=_field(args, "sequence_number"),
        input_dims=_field(args, "input_dims"),
        input_types=_field(args, "input_types"),
        input_strides=_field(args, "input_strides"),
        concrete_inputs=_field(args, "concrete_inputs"),
        scope=scope,
        collective=_field(args, "collective"),
        message_elements=_field(args, "message_elements"),
        message_dtype=_field(args, "message_dtype"),
    )


def _sort_by_start(ops: list[Op]) -> None:
    """Sort by start, the longest first among equal starts, else in trace order (stable sorts: no key tuple per
    event). A trace is mostly written in order, which the first sort takes fastest; equal starts are rare.

    Equal starts are looked for by a loop over the events, which stops at the first: a list of the starts and
    ``any(map(eq, ...))`` over it took twice as long (0.07 against 0.04 s at 10x).
    """
    ops.sort(key=attrgetter("ts_us"))
    previous = None
    for op in ops:
        start = op.ts_us
        if start == previous:
            ops.sort(key=attrgetter("dur_us"), reverse=True)
            ops.sort(key=attrgetter("ts_us"))
            return
        previous = start


def _nest(ops: list[Op]) -> None:
    """Build parent/child links per thread from time containment, and the module scope of each event.

    One pass in start order, with the thread's state in locals: its innermost open event (the parent of an event
    that starts before it ends), that end, the module-scope annotation around it, and a stack of the states it
    encloses. A thread's events come in runs (two threads switch 121 times in 355k events at 10x), so the state is
    swapped only when the pid or tid object changes (they are interned; equal strings that are not the same object
    only cost a swap): no per-thread lists and no key per event, 0.18 -> 0.13 s at 10x.
    """
    saved: dict[tuple[str | None, str | None], tuple[list[Any], Op | None, float, Op | None]] = {}  # other threads'
    pid = tid = None
    enclosing: list[tuple[Op | None, float, Op | None]] = []  # the (parent, end, holder) states below the current
    parent: Op | None = None  # the innermost open event
    end = math.inf  # its end
    holder: Op | None = None  # the module-scope annotation the parent is or runs in
    for op in ops:  # sorted by start, longest first
        if op.tid is not tid or op.pid is not pid:
            saved[(pid, tid)] = (enclosing, parent, end, holder)
            pid, tid = op.pid, op.tid
            enclosing, parent, end, holder = saved.get((pid, tid)) or ([], None, math.inf, None)
        start = op.ts_us
        while start >= end:  # the bottom state's end is infinite: it is never left
            parent, end, holder = enclosing.pop()
        if parent is not None:
            op.parent = parent
            parent.children.append(op)
            if holder is not None:  # else both stay None
                op.module_call = holder
                op.module = holder.scope
        enclosing.append((parent, end, holder))
        parent, end = op, start + op.dur_us
        if op.scope is not None:
            holder = op


def _link_kernels(runtime_calls: dict[int, Op], kernels: list[Kernel]) -> None:
    """Link each device event to the operator around the runtime call with the same correlation id."""
    cpu_op = EventKind.CPU_OP
    for kernel in kernels:
        runtime = runtime_calls.get(kernel.correlation)  # type: ignore[arg-type]
        if runtime is None:
            continue
        launcher = runtime.parent  # the innermost CPU operator around the call (ancestors() inlined: 2x faster)
        while launcher is not None and launcher.kind is not cpu_op:
            launcher = launcher.parent
        if launcher is not None:
            kernel.launcher = launcher
            launcher.kernels.append(kernel)


def _steps(ops: list[Op]) -> list[Step]:
    steps = []
    for op in ops:
        if (op.name.startswith("ProfilerStep#") and op.kind in (EventKind.ANNOTATION, EventKind.CPU_OP)
                and (match := STEP_NAME.match(op.name))):
            steps.append(Step(number=int(match.group(1)), ts_us=op.ts_us, dur_us=op.dur_us))
    return sorted(steps, key=lambda s: s.ts_us)



def find_traces(path: str | Path) -> list[Path]:
    """The trace file itself, or every Kineto trace under a TensorBoard log dir (runs and workers), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TraceError(f"{path}: no such file or directory; pass a *.pt.trace.json[.gz] file or a log dir")
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    found = [p for p in files if p.name.endswith(TRACE_SUFFIXES)]
    if not found and path.name.endswith(TRACE_SUFFIXES):
        raise TraceError(f"{path}: is a directory named like a trace and holds no *.pt.trace.json[.gz] files; "
                         "pass the trace file itself or the log dir torch.profiler wrote to")
    if not found:  # traces named otherwise (HTA's rank-N.json.gz, a copy renamed): the JSON files that hold one
        found = [p for p in files if p.name.endswith(OTHER_TRACE_SUFFIXES) and _looks_like_trace(p)]
    if not found:
        raise TraceError(f"{path}: holds no *.pt.trace.json[.gz] files (nor other *.json[.gz] files holding a "
                         "trace); pass the log dir torch.profiler wrote to")
    return found


OTHER_TRACE_SUFFIXES = (".json", ".json.gz")
TRACE_HEAD_BYTES = 1 << 16  # the top-level values before the events (device properties, ...) fit in this


def _looks_like_trace(path: Path) -> bool:
    """A JSON file whose beginning is a trace's: a ``"traceEvents"`` key, or an array whose first item has a phase."""
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as file:
            head = file.read(TRACE_HEAD_BYTES)
    except (OSError, EOFError, zlib.error):
        return False
    if head.lstrip()[:1] == b"[":
        return b'"ph"' in head
    return b'"traceEvents"' in head
