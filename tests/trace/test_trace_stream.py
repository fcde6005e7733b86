"""The streamed reading (events decoded in runs while the file is gunzipped) against the whole-text reading.

Real traces are cut into small pieces and runs here, so that every trace takes many runs; the expected Profile is
the standard library's reading of the same text (``parse_trace(json.loads(...))``), not the code under test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import SHARED_TRACES
from test_trace_fast_path import _summary_of, json_reading_profile

from convdoctor.analyzer.trace import stream as trace_stream
from convdoctor.analyzer.trace.fast import EventTyping, NotPlain
from convdoctor.analyzer.trace.reader import _EventTyper, _profile, load_profile, parse_trace
from convdoctor.analyzer.trace.stream import TraceStream, streamed_events
from convdoctor.errors import TraceError


def _pieces(text: bytes, size: int) -> list[bytes]:
    return [text[start:start + size] for start in range(0, len(text), size)]


def _streamed_summary(text: bytes, piece: int, run: int, monkeypatch) -> list:
    """The summary of the Profile streamed from ``text`` in pieces and runs of the given sizes, never whole."""
    def whole(_text):
        raise AssertionError("decoded whole instead of in runs")

    monkeypatch.setattr(trace_stream, "split_trace", whole)
    typer = _EventTyper()
    typing = EventTyping(typer.kind)
    top = streamed_events(_pieces(text, piece), typing, run_bytes=run)
    metadata = {key: json.loads(bytes(raw)) for key, raw in top.items()}
    return _summary_of(_profile(metadata, typing.ops, typing.kernels, typing.memory, typer.unknown, "<memory>"))


@pytest.mark.parametrize("name", sorted(SHARED_TRACES))
def test_the_shared_traces_stream_in_runs_to_the_profile_of_the_json_reading(name, monkeypatch):
    text = gzip.decompress(SHARED_TRACES[name].read_bytes())
    expected, _ = json_reading_profile(name)  # _summary_of(parse_trace(json.loads(text))), read once a session
    assert _streamed_summary(text, len(text) // 40, len(text) // 100, monkeypatch) == expected


def _trace_text(after: dict, indent: int | None = 2, change=None) -> bytes:
    """The real CPU trace, its top-level values after the events replaced by ``after``, as JSON text."""
    trace = json.loads(gzip.decompress(SHARED_TRACES["cpu_only"].read_bytes()))
    events = trace.pop("traceEvents")
    if change:
        change(events)
    others = {key: value for key, value in trace.items() if key not in after}
    return json.dumps({**others, "traceEvents": events, **after}, indent=indent, ensure_ascii=False).encode()


def _last_operator(events: list[dict]) -> dict:
    return [e for e in events if e.get("cat") in ("cpu_op", "user_annotation")][-1]


def _rename_an_operator(name: str):
    def change(events):
        _last_operator(events)["name"] = name
    return change


def _tensorlist_in_a_later_run(events):
    _last_operator(events).setdefault("args", {})["Input Dims"] = [[[1, 2], [3]], [4]]


# Layouts the runs must take (the same Profile as the JSON reading, never decoded whole).
STREAMED = {
    "as Kineto writes them": dict(after={"traceName": "t.json", "displayTimeUnit": "ms"}),
    "compact, as json.dumps writes": dict(after={"traceName": "t.json"}, indent=None),
    "log lines with brackets after the events": dict(after={"logs": ["a [x] b]", "c]"], "traceName": "t]"}),
    "objects after the events": dict(after={"devices": [{"id": 0}, {"id": 1}], "more": {"a": [{}]}}),
    "nothing after the events": dict(after={}),
    "a name that is not ASCII": dict(after={}, change=_rename_an_operator("conv\u00e9 \u5377\u79ef")),
    "TensorList shapes in a later run": dict(after={}, change=_tensorlist_in_a_later_run),
}


@pytest.mark.parametrize("layout", sorted(STREAMED))
def test_layouts_stream_in_runs_to_the_profile_of_the_json_reading(layout, monkeypatch):
    text = _trace_text(**STREAMED[layout])
    expected = _summary_of(parse_trace(json.loads(text)))
    for piece, run in ((700, 300), (4096, 2048), (len(text) // 3, 1)):
        assert _streamed_summary(text, piece, run, monkeypatch) == expected


def test_a_separator_inside_a_name_ends_the_cutting_and_the_rest_is_one_run(monkeypatch):
    text = _trace_text({}, change=_rename_an_operator('a}, {"b'))
    assert text.count(b'a}, {\\"b') == 1  # the name, escaped: a cut there is inside a string
    runs = []
    typed_run = trace_stream._typed_run
    monkeypatch.setattr(trace_stream, "_typed_run", lambda *args: runs.append(typed_run(*args)) or runs[-1])
    summary = _streamed_summary(text, 700, 1, monkeypatch)  # runs of one event: a cut is tried in the name
    assert runs.count(False) == 1 and runs[-1] is True  # refused there; the rest was the last run
    assert summary == _summary_of(parse_trace(json.loads(text)))


def test_a_second_traceevents_key_after_the_events_is_refused():
    text = _trace_text({}).rstrip()[:-1] + b', "traceEvents": []}'
    assert json.loads(text)["traceEvents"] == []  # JSON keeps the last one: no events at all
    with pytest.raises(NotPlain):
        streamed_events(_pieces(text, 700), EventTyping(_EventTyper().kind), run_bytes=300)


def test_a_file_streams_from_its_thread_in_gunzipped_pieces(tmp_path):
    text = _trace_text({}) * 1  # one member, read in several zlib calls
    path = tmp_path / "t.pt.trace.json.gz"
    path.write_bytes(gzip.compress(text))
    pieces = list(TraceStream(path).pieces())
    assert b"".join(pieces) == text
    plain = tmp_path / "t.pt.trace.json"
    plain.write_bytes(text)
    assert b"".join(TraceStream(plain).pieces()) == text


@pytest.mark.parametrize("tail", [b"more gzip", b"\0" * 16])
def test_a_file_that_is_not_one_gzip_member_is_read_whole(tmp_path, tail):
    good = SHARED_TRACES["cpu_only"].read_bytes()
    path = tmp_path / "tail.pt.trace.json.gz"
    path.write_bytes(good + (gzip.compress(b" ") if tail == b"more gzip" else tail))
    with pytest.raises(NotPlain):
        b"".join(TraceStream(path).pieces())
    assert _summary_of(load_profile(path)) == _summary_of(load_profile(SHARED_TRACES["cpu_only"]))


def test_a_truncated_file_streams_its_start_then_is_a_trace_error(tmp_path: Path):
    raw = SHARED_TRACES["resnet50"].read_bytes()
    path = tmp_path / "cut.pt.trace.json.gz"
    path.write_bytes(raw[: len(raw) // 2])
    pieces = TraceStream(path).pieces()
    assert next(pieces).lstrip().startswith(b"{")  # its start is decoded while the rest is read...
    with pytest.raises(NotPlain):
        list(pieces)
    with pytest.raises(TraceError, match="truncated"):  # ...then the whole reading says what is wrong
        load_profile(path)


def test_a_closed_stream_stops_reading_and_drops_its_pieces():
    stream = TraceStream(SHARED_TRACES["resnet50"])
    pieces = stream.pieces()
    next(pieces)
    stream.close()
    stream.thread.join(timeout=30)
    assert not stream.thread.is_alive()
    assert stream._queue.qsize() <= 1  # at most the piece put while it was closed
