"""The fast reading of a Kineto trace: msgspec decodes each event straight into the fields ``trace`` types.

The decoder reads only the keys the parser uses of the complete events, the only ones it types (call stacks,
unknown args and every key of the other events are skipped in C), and checks each value's type and range as it
decodes. The field types below accept exactly the values that ``trace``'s typing functions keep unchanged; any
other value (a time written as a string, a ``null``, an id of another type, JSON the standard library accepts and
msgspec does not, such as ``NaN``) makes the decoding fail, and ``load_profile`` then reads the trace the tolerant
way. Both give the same Profile.

Shapes are decoded as plain tensor sizes first; a trace holding a TensorList input's shapes (``aten::cat``,
``_foreach`` ops: a list of sizes per tensor) is decoded again with shape types that take them, and the few
entries those types take but the tolerant typing does not keep (sizes and lists mixed in one entry) are typed by
``typed_shapes``, the function both readings share.
"""

from __future__ import annotations

import sys
from itertools import chain
from typing import Any, Callable, Union

import msgspec

from convdoctor.analyzer.trace.module_scope import parse_scope_name
from convdoctor.analyzer.trace.profile import (
    DEVICE_KINDS,
    SCOPE_KINDS,
    EventKind,
    Kernel,
    MemoryEvent,
    Op,
)
from convdoctor.analyzer.trace.schema import (
    MEMORY_EVENT_NAME,
    TIME_RESOLUTION_US,
    Args,
    ListArgs,
    MemoryArgs,
    Time,
    typed_shapes,
)

NO_ARGS = Args()
NO_LIST_ARGS = ListArgs()
NO_MEMORY_ARGS = MemoryArgs()


class Event(msgspec.Struct, tag_field="ph", tag="X", gc=False):
    """The keys of a complete (``ph`` X) event the parser reads."""

    cat: str = ""
    name: str = ""
    ts: Time = None  # an event without a time is left out
    dur: Time = 0.0
    pid: int | str = ""
    tid: int | str = ""
    args: Args = NO_ARGS


class ListEvent(Event, gc=False):
    """An ``Event`` whose shapes may hold a TensorList input's."""

    args: ListArgs = NO_LIST_ARGS


class Instant(msgspec.Struct, tag_field="ph", tag="i", gc=False):
    """The keys of an instant (``ph`` i) event the parser reads: only ``[memory]`` instants are typed."""

    name: str = ""
    ts: Time = None
    pid: int | str = ""
    tid: int | str = ""
    args: MemoryArgs = NO_MEMORY_ARGS


# The other phases of the Trace Event Format (flows, metadata…): the parser types none of them, so each decodes to
# an empty struct, its keys skipped in C. An event without a phase, or with one not listed, makes the decoding fail
# and the trace is read the tolerant way (which skips that event too).
OTHER_PHASES = "BEICbnesftPNODMVvRc"
UNREAD = tuple(msgspec.defstruct(f"Unread{ph}", [], tag_field="ph", tag=ph, gc=False) for ph in OTHER_PHASES)
EVENTS = msgspec.json.Decoder(list[Union[(Event, Instant, *UNREAD)]])
LIST_EVENTS = msgspec.json.Decoder(list[Union[(ListEvent, Instant, *UNREAD)]])
TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])
EVENTS_KEY = b'"traceEvents"'
EMPTY_ARRAY = msgspec.Raw(b"[]")
JSON_SPACE = b" \t\n\r"


class NotPlain(Exception):
    """The trace holds a value the typed decoding does not take: read it the tolerant way."""


def split_trace(text: str | bytes) -> tuple[list[msgspec.Struct], dict[str, msgspec.Raw], bool]:
    """The trace's events, decoded; its other top-level values, undecoded; and whether the events were decoded
    with ``ListShapes`` (the trace holds a shape plain sizes do not take). NotPlain when the typed decoding does
    not take the trace (including JSON that is not a Kineto trace: the tolerant reading says what is wrong)."""
    try:
        if _is_array(text):  # the Chrome trace format's other form: the events' array alone, nothing around it
            decoded = _decoded_events(text, {})
            if not decoded[0]:  # no event: the tolerant reading says it is not a trace
                raise NotPlain("an empty array")
            return decoded
        cut = _cut_events(text) if isinstance(text, bytes) else None
        if cut is not None:
            top, raw_events = cut
            try:
                return _decoded_events(raw_events, top)
            except msgspec.DecodeError:  # not JSON, or a "]" after the events' array: split the plain way
                pass
        top = TOP_LEVEL.decode(text)
        raw_events = top.pop("traceEvents", None)
        if raw_events is None:
            raise NotPlain("no traceEvents")
        return _decoded_events(raw_events, top)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise NotPlain(str(exc)) from exc


def _is_array(text: str | bytes) -> bool:
    """The text is a JSON array (its first character other than white space is ``[``)."""
    head = text[:64].lstrip(JSON_SPACE if isinstance(text, bytes) else JSON_SPACE.decode())
    return head[:1] in (b"[", "[")


def _decoded_events(raw_events: Any, top: dict[str, msgspec.Raw]
                    ) -> tuple[list[msgspec.Struct], dict[str, msgspec.Raw], bool]:
    try:
        return EVENTS.decode(raw_events), top, False
    except msgspec.ValidationError:  # stops at the first value refused: a TensorList's shapes, or a null...
        return LIST_EVENTS.decode(raw_events), top, True


def _cut_events(text: bytes) -> tuple[dict[str, msgspec.Raw], memoryview] | None:
    """The trace's top-level values other than its events, undecoded, and its events' array, not yet decoded;
    None when the array cannot be cut out so.

    The events are almost all of a trace: rather than scanning them twice (once to split the top level, once to
    decode them), the array is cut from the ``[`` after the first ``"traceEvents":`` to the last ``]``, and the
    rest is decoded with ``[]`` in its place. The rest must hold that ``[]`` as its only ``traceEvents``; the
    array is right when it decodes (a JSON value has one end: a cut past it leaves trailing characters).
    """
    try:
        start = events_start(text)
    except NotPlain:
        return None
    end = text.rfind(b"]") + 1
    if start is None or end <= start:
        return None
    top = top_level_around(text[:text.find(EVENTS_KEY)], text[end:])
    return None if top is None else (top, memoryview(text)[start:end])


def events_start(text: bytes | bytearray) -> int | None:
    """Where the events' array starts (its ``[``): None while the text does not hold the first ``"traceEvents"``
    key and a ``[`` after it; NotPlain when what follows that key is not ``: [``."""
    key = text.find(EVENTS_KEY)
    if key < 0 or (start := text.find(b"[", key + len(EVENTS_KEY))) < 0:
        return None
    if text[key + len(EVENTS_KEY):start].strip(JSON_SPACE) != b":":
        raise NotPlain("the traceEvents key is not followed by an array")
    return start


def top_level_around(before: bytes, after: bytes) -> dict[str, msgspec.Raw] | None:
    """The trace's top-level values other than its events, undecoded, when ``before`` (the text up to the
    ``"traceEvents"`` key) and ``after`` (the text after the events' array) hold them with that key once; None
    when they do not (the array was not cut where it ends, or the key is there twice)."""
    rest = before + EVENTS_KEY + b":[]" + after
    if rest.count(EVENTS_KEY) != 1:
        return None
    try:
        top = TOP_LEVEL.decode(rest)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return top if top.pop("traceEvents", None) == EMPTY_ARRAY else None


class EventTyping:
    """The Op and Kernel records of decoded events, each list in trace order, typed one run of events after the
    other (``add``); what the typing remembers (interned names and thread ids, input types, category kinds)
    carries over from one run to the next."""

    def __init__(self, kind_of: Callable[[str], EventKind | None]) -> None:
        self.kind_of = kind_of  # a category's kind, None for one not typed (it also counts the unknown ones)
        self.ops: list[Op] = []
        self.kernels: list[Kernel] = []
        self.memory: list[MemoryEvent] = []
        self._names: dict[str, str] = {}  # interned names, and the ids seen as pid/tid strings
        self._threads: dict[int | str, str] = {}
        self._strings: dict[tuple[str, ...], tuple[str, ...]] = {}  # each list of input types or values, interned
        # Each category spelling met: its kind, whether that is a device kind and a scope kind; None: not typed.
        self._kinds: dict[str, tuple[EventKind, bool, bool] | None] = {}

    def add(self, events: list[msgspec.Struct], list_shapes: bool = False) -> None:
        """Type each complete event whose category has a kind, after the events added before.

        The same records as ``trace._typed_event`` makes of the same events: the decoder already checked every
        type and range, so what is left is the clamping of sub-nanosecond times, the spellings, and interning (and,
        for events decoded with ``list_shapes``, the entries mixing sizes and lists).

        ``events`` is emptied on the way: each event is freed as soon as it is typed, so the records take the
        memory it held instead of new pages (55k fewer page faults at 10x, 0.1 s).
        """
        add_op, add_kernel = self.ops.append, self.kernels.append
        kind_of = self.kind_of
        intern = sys.intern
        names, threads, strings, kinds = self._names, self._threads, self._strings, self._kinds
        events.reverse()
        next_event = events.pop  # from the end: trace order
        for _ in range(len(events)):
            event = next_event()
            if not isinstance(event, Event):
                if isinstance(event, Instant) and event.name == MEMORY_EVENT_NAME:
                    self._add_memory(event)
                continue
            known = kinds.get(event.cat, False)
            if known is False:
                kind = kind_of(event.cat)  # which also counts the unknown categories
                if kind is None:
                    continue
                known = kinds[event.cat] = (
                    None if kind is EventKind.GPU_ANNOTATION else (kind, kind in DEVICE_KINDS, kind in SCOPE_KINDS))
            if known is None:
                continue
            ts = event.ts
            if ts is None:
                continue
            if -TIME_RESOLUTION_US < ts < TIME_RESOLUTION_US:
                ts = 0.0
            dur = event.dur
            if -TIME_RESOLUTION_US < dur < TIME_RESOLUTION_US:
                dur = 0.0
            name = names.get(event.name)
            if name is None:
                name = names[event.name] = intern(event.name)
            kind, device, scoped = known
            args = event.args
            if device:
                add_kernel(Kernel(name, kind, args.device, args.stream, ts, dur, args.correlation, None, args.grid,
                                  args.block, args.registers_per_thread, args.shared_memory_bytes,
                                  _rate(args.blocks_per_sm), _rate(args.warps_per_sm),
                                  _percent(args.est_occupancy_pct)))
                continue
            pid = threads.get(event.pid)
            if pid is None:
                pid = threads[event.pid] = intern(str(event.pid))
            tid = threads.get(event.tid)
            if tid is None:
                tid = threads[event.tid] = intern(str(event.tid))
            external_id = args.external_id if args.external_id is not None else args.external_id_lower
            dims = args.input_dims if args.input_dims is not None else args.input_dims_lower
            strides = args.input_strides
            if list_shapes:
                dims, strides = _unmixed(dims), _unmixed(strides)
            types = args.input_types
            if types is not None:
                types = list(strings.get(types) or _interned(types, strings))
            concrete = args.concrete_inputs
            if concrete is not None:
                concrete = list(strings.get(concrete) or _interned(concrete, strings))
            add_op(Op(name, kind, pid, tid, ts, dur, external_id, args.correlation, args.sequence_number,
                      [] if dims is None else dims, [] if types is None else types,
                      [] if strides is None else strides, [] if concrete is None else concrete,
                      None, [], [], parse_scope_name(name) if scoped else None,
                      collective=args.collective, message_elements=args.message_elements,
                      message_dtype=args.message_dtype))

    def _add_memory(self, event: Instant) -> None:
        """Type a ``[memory]`` instant as ``trace._memory_event`` does (one without a time or a size is left out)."""
        args, ts = event.args, event.ts
        if ts is None or args.bytes is None:
            return
        threads = self._threads
        pid = threads.get(event.pid) or threads.setdefault(event.pid, sys.intern(str(event.pid)))
        tid = threads.get(event.tid) or threads.setdefault(event.tid, sys.intern(str(event.tid)))
        self.memory.append(MemoryEvent(0.0 if -TIME_RESOLUTION_US < ts < TIME_RESOLUTION_US else ts, pid, tid,
                                       args.bytes, args.total_allocated, args.total_reserved, args.device_type,
                                       args.device_id))


def _interned(strings: tuple[str, ...], known: dict[tuple[str, ...], tuple[str, ...]]) -> tuple[str, ...]:
    """``strings`` interned (a few hundred type names and values repeat over millions of events), remembered."""
    interned = known[strings] = tuple(map(sys.intern, strings))
    return interned


def _unmixed(shapes: list[Any] | None) -> list[Any] | None:
    """``ListShapes`` as the tolerant typing keeps them: only an entry mixing sizes and lists changes (to ``[]``)."""
    if not shapes or list not in map(type, chain.from_iterable(shapes)):  # no TensorList: nothing to mix
        return shapes
    return typed_shapes(shapes)


def _rate(value: float | None) -> float | None:
    """As ``trace._rate_or_none`` on a number the decoder gave: finite and non-negative, or None."""
    return value if value is not None and 0 <= value < float("inf") else None


def _percent(value: float | None) -> float | None:
    return value if value is not None and 0 <= value <= 100 else None
