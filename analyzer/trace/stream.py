"""Decoding a trace while it is read: the file is gunzipped in pieces on a background thread, and each run of
complete events is decoded and typed as soon as its text is there.

zlib and file reads release the interpreter lock, so the gunzip (about a fifth of the decoding's time) runs on
another core instead of before the decoding, and each run of events is typed while its decoded structs are still
in the cache. The pieces are cut into runs of events at ``}, {`` between two events; a run is right when it decodes
(JSON has one parse: when the text before a cut and the text after it are each a list of values, so is the whole,
with the same values). The end of the events' array is found the same way: a ``]`` after a ``}`` such that both the
events before it and the top level around it (with ``[]`` in place of the events) decode.

Anything this reading does not take (a file that is not a single gzip member, a cut inside a string, an array
after the events longer than a piece...) raises NotPlain, and ``load_profile`` reads the whole file as before.
"""

from __future__ import annotations

import queue
import threading
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import msgspec

from convdoctor.analyzer.trace.fast import (
    EVENTS,
    EVENTS_KEY,
    JSON_SPACE,
    LIST_EVENTS,
    EventTyping,
    NotPlain,
    events_start,
    split_trace,
    top_level_around,
)

GZIP_MAGIC = b"\x1f\x8b"
COMPRESSED_STEP = 1 << 18  # gzip bytes per zlib call: about 8 MB of JSON at a trace's usual ratio (25-30x)
PLAIN_STEP = 8 << 20  # bytes per read of a trace that is not gzipped
RUN_BYTES = 1 << 17  # text of the events decoded and typed at a time: their structs stay in the core's cache
MAX_END_TRIES = 8  # ``]`` after ``}`` tried, from the right, as the end of the events' array
OPEN, CLOSE, COMMA, BRACE_CLOSE = ord("["), ord("]"), ord(","), ord("}")
SPACE = frozenset(JSON_SPACE)
END, UNREAD = object(), object()  # queued after the last piece; queued when the file cannot be streamed


class StreamClosed(Exception):
    """Raised in the reading thread of a stream closed by its reader."""


class TraceStream:
    """A trace file's text in pieces, read (and gunzipped) on a background thread started at once.

    ``after``: a thread to wait for before reading (the stream of the trace before this one), so that the files
    of a log dir are read one after another, each while the one before it is analyzed.
    """

    def __init__(self, path: Path, after: threading.Thread | None = None) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._after = after
        self._closed = False
        self.thread = threading.Thread(target=self._read, name=f"read {path.name}", daemon=True)
        self.thread.start()

    def pieces(self) -> Iterator[bytes]:
        """The file's text in order (gunzipped); NotPlain when it cannot be read in pieces (read it whole)."""
        while (piece := self._queue.get()) is not END:
            if piece is UNREAD:
                raise NotPlain(f"{self.path}: read whole")
            yield piece

    def close(self) -> None:
        """Stop reading, and drop the pieces not taken (when the trace is read another way)."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get()

    def _read(self) -> None:
        def put(piece: Any) -> None:
            if self._closed:
                raise StreamClosed
            self._queue.put(piece)

        try:
            if self._after is not None:
                self._after.join()
            with open(self.path, "rb") as file:
                if not self.path.name.endswith(".gz"):
                    while piece := file.read(PLAIN_STEP):
                        put(piece)
                    put(END)
                    return
                raw = file.read()
            if _gunzipped_in_pieces(raw, put):
                put(END)
                return
        except (OSError, zlib.error):
            pass  # the whole reading says what is wrong
        except StreamClosed:
            return
        self._queue.put(UNREAD)


def _gunzipped_in_pieces(raw: bytes, put: Any) -> bool:
    """Put the gunzipped pieces of ``raw``; False when it is not one whole gzip member (zlib checks its CRC)."""
    if raw[:2] != GZIP_MAGIC:
        return False
    unzip = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
    view = memoryview(raw)
    for start in range(0, len(raw), COMPRESSED_STEP):
        if piece := unzip.decompress(view[start:start + COMPRESSED_STEP]):
            put(piece)
        if unzip.eof:
            return not unzip.unused_data and start + COMPRESSED_STEP >= len(raw)  # else: more members, or junk
    return False  # truncated


def streamed_events(pieces: Iterable[bytes], typing: EventTyping, run_bytes: int = RUN_BYTES
                    ) -> dict[str, msgspec.Raw]:
    """Type the events of a trace's text given in pieces into ``typing``; the trace's other top-level values,
    undecoded. NotPlain when the pieces cannot be decoded so.

    The events are decoded in runs of about ``run_bytes``, each typed at once: its structs are still in the cache
    (decoding the whole array first and then typing it is 10-20% slower).
    """
    pending = bytearray()  # the text not decoded yet: from the events' "[" once it is found
    head = b""  # the text before the "traceEvents" key, and the key up to its "["
    ascii_only = True  # every piece so far is ASCII (most traces): runs are decoded from the bytes
    runs = 0  # runs of events decoded
    cutting = True  # False once a cut was not between two events: the rest is one last run
    try:
        for piece in pieces:
            pending += piece
            ascii_only = ascii_only and piece.isascii()
            if not head:
                if (start := events_start(pending)) is None:
                    continue
                head = bytes(pending[:start])
                del pending[:start]
            run_start = 0
            while cutting and (cut := _cut_after(pending, run_start + run_bytes)) is not None:
                if not _typed_run(pending, run_start, cut[0], ascii_only, typing):
                    cutting = False  # inside a string, or past the events' end
                    break
                pending[cut[1]] = OPEN  # the separator before the next event opens the next run
                run_start = cut[1]
                runs += 1
            del pending[:run_start]
        if runs == 0:  # all of it came in one piece, or the events were never found: decoded whole
            text = head + pending
            del pending[:]  # one copy of the text at a time
            events, top, list_shapes = split_trace(text if ascii_only else text.decode("utf-8"))
            typing.add(events, list_shapes)
            return top
        return _last_run(head, pending, ascii_only, typing)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
        raise NotPlain(str(exc)) from exc


def _cut_after(text: bytearray, at: int) -> tuple[int, int] | None:
    """The first place between two events whose second event starts at or after ``at``: the index of the first
    event's ``}`` and of a separator byte before the second's ``{`` (a ``,`` or a space); None when there is none
    in ``text`` yet."""
    brace = at - 1
    while (brace := text.find(b"{", brace + 1)) > 0:
        before = brace - 1
        while before > 0 and text[before] in SPACE:
            before -= 1
        if text[before] == COMMA:
            end = before - 1
            while end > 0 and text[end] in SPACE:
                end -= 1
            if text[end] == BRACE_CLOSE:
                return end, brace - 1
    return None


def _typed_run(text: bytearray, start: int, end: int, ascii_only: bool, typing: EventTyping) -> bool:
    """Decode and type the events of ``text[start:end + 1]`` (from the run's ``[`` to the ``}`` at ``end``); False,
    and ``text`` unchanged, when that text is not a list of values (a cut inside a string or past the events)."""
    separator = text[end + 1]
    text[end + 1] = CLOSE  # a separator after the "}": the run's "]"
    run: Any = memoryview(text)[start:end + 2]
    try:
        if not ascii_only:  # bytes that are not ASCII must be UTF-8, as a whole trace's must
            run = bytes(run).decode("utf-8")
        try:
            events, list_shapes = EVENTS.decode(run), False
        except msgspec.ValidationError:  # a TensorList's shapes (or a value no reading types: raised again)
            events, list_shapes = LIST_EVENTS.decode(run), True
    except msgspec.DecodeError:
        run = None  # a view must be released before its buffer changes
        text[end + 1] = separator
        return False
    run = None
    typing.add(events, list_shapes)
    return True


def _last_run(head: bytes, text: bytearray, ascii_only: bool, typing: EventTyping) -> dict[str, msgspec.Raw]:
    """Type the last events (``text`` holds them from their ``[``, then the rest of the trace); the top-level
    values other than the events, undecoded."""
    key = head.find(EVENTS_KEY)
    end = len(text)
    tries = 0
    while tries < MAX_END_TRIES and (end := text.rfind(b"]", 1, end)) > 0:
        brace = end - 1
        while brace > 0 and text[brace] in SPACE:
            brace -= 1
        if text[brace] != BRACE_CLOSE:
            continue  # a list of other values, or a "]" in a string
        tries += 1
        top = top_level_around(head[:key], bytes(text[end + 1:]))  # None: this "]" is not the events' end
        if top is not None and _typed_run(text, 0, brace, ascii_only, typing):
            return top
    raise NotPlain("the end of the events' array was not found")
