"""The parser on real traces: the three shared GPU/CPU traces, and broken files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import SHARED_TRACES

from convdoctor.analyzer.conv.layers import TimeBasis, analyze_convs, conv_flops
from convdoctor.analyzer.trace.profile import EventKind
from convdoctor.analyzer.trace.reader import ReadAhead, load_profile, parse_trace
from convdoctor.errors import TraceError


@pytest.fixture(scope="module")
def resnet50():
    return load_profile(SHARED_TRACES["resnet50"])


def test_resnet50_v100_trace_types_and_links_every_kernel(resnet50):
    assert len(resnet50.steps) == 6
    assert resnet50.device_properties[0]["name"].startswith("Tesla V100")
    kernels = [k for k in resnet50.kernels if k.kind is EventKind.KERNEL]
    assert len(kernels) > 8000
    linked = [k for k in kernels if k.launcher is not None]
    assert len(linked) / len(kernels) > 0.99
    assert all(k.launcher.kind is EventKind.CPU_OP for k in linked)


def test_resnet50_v100_trace_has_its_53_convolutions_with_backward(resnet50):
    analysis = analyze_convs(resnet50)
    assert analysis.time_basis is TimeBasis.DEVICE
    assert len(analysis.layers) == 53  # ResNet-50 has 53 conv layers
    assert all(layer.calls == 6 for layer in analysis.layers)  # once per profiled step
    assert all(layer.backward_us > 0 for layer in analysis.layers)  # dgrad + wgrad charged through sequence numbers
    assert all(layer.kernel_names for layer in analysis.layers)
    stem = next(layer for layer in analysis.layers if layer.weight_shape == [64, 3, 7, 7])
    assert stem.input_shape == [32, 3, 224, 224]
    assert stem.output_shape == [32, 64, 112, 112]  # from the backward's grad_output: the old schema has no strides
    assert stem.flops == conv_flops([32, 3, 224, 224], [64, 3, 7, 7], [32, 64, 112, 112], False)
    assert 0.1 < analysis.share(analysis.conv_time_us) < 1.0


def test_recsys_a100_trace_has_no_convolutions_but_parses(resnet50):
    profile = load_profile(SHARED_TRACES["recsys"])
    assert len(profile.ops) > 50_000 and profile.kernels
    assert sum(k.launcher is not None for k in profile.kernels) / len(profile.kernels) > 0.95
    assert analyze_convs(profile).layers == []


def test_cpu_only_trace_without_device_properties():
    profile = load_profile(SHARED_TRACES["cpu_only"])
    assert profile.device_properties == []
    assert not profile.has_device_events
    assert any(op.name == "gloo:all_reduce" for op in profile.ops)
    assert analyze_convs(profile).time_basis is TimeBasis.HOST


def test_truncated_gzip_is_a_trace_error(tmp_path: Path):
    data = SHARED_TRACES["cpu_only"].read_bytes()
    broken = tmp_path / "broken.pt.trace.json.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="truncated"):
        load_profile(broken)


def _gzip_layouts(text: bytes) -> dict[str, bytes]:
    """The same text gzipped the ways a file can hold it: the fast gunzip must read each as gzip.decompress does."""
    text += b" " * (len(text) % 2)  # an even length: two halves of equal length (JSON allows the space)
    half = len(text) // 2
    return {
        "one member": gzip.compress(text),
        "two members": gzip.compress(text[:1000]) + gzip.compress(text[1000:]),
        "two members of the same length": gzip.compress(text[:half]) + gzip.compress(text[half:]),
        "zero padding after the member": gzip.compress(text) + b"\0" * 16,
    }


@pytest.mark.parametrize("layout", sorted(_gzip_layouts(b"")))
def test_gzip_members_and_padding_read_as_gzip_decompress_reads_them(tmp_path: Path, layout: str):
    text = gzip.decompress(SHARED_TRACES["cpu_only"].read_bytes())
    raw = _gzip_layouts(text)[layout]
    assert gzip.decompress(raw).rstrip() == text.rstrip()  # the layout holds the whole trace
    path = tmp_path / "layout.pt.trace.json.gz"
    path.write_bytes(raw)
    profile, expected = load_profile(path), parse_trace(json.loads(text))
    assert [(op.name, op.ts_us) for op in profile.ops] == [(op.name, op.ts_us) for op in expected.ops]
    assert len(profile.ops) >= 10  # the comparison is not of two empty lists


def test_bytes_after_the_gzip_member_are_a_trace_error(tmp_path: Path):
    path = tmp_path / "tail.pt.trace.json.gz"
    path.write_bytes(SHARED_TRACES["cpu_only"].read_bytes() + b"not gzip")
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(path.read_bytes())
    with pytest.raises(TraceError, match="cannot be decompressed"):
        load_profile(path)


def test_read_ahead_gives_each_trace_its_text_or_its_error_in_order(tmp_path: Path):
    good = SHARED_TRACES["cpu_only"]
    broken = tmp_path / "broken.pt.trace.json.gz"
    broken.write_bytes(good.read_bytes()[:500])
    reader = ReadAhead([good, broken, good])
    with pytest.raises(ValueError, match="not the next trace"):
        reader.take(broken)
    assert b"".join(reader.take(good).pieces()) == gzip.decompress(good.read_bytes())
    with pytest.raises(TraceError, match="truncated"):
        load_profile(broken, reader.take(broken))
    assert len(load_profile(good, reader.take(good)).ops) == len(load_profile(good).ops)


def test_invalid_json_is_a_trace_error(tmp_path: Path):
    broken = tmp_path / "broken.pt.trace.json"
    broken.write_text('{"traceEvents": [')
    with pytest.raises(TraceError, match="not valid JSON"):
        load_profile(broken)


def test_foreign_json_is_a_trace_error(tmp_path: Path):
    foreign = tmp_path / "package.json.gz"
    with gzip.open(foreign, "wt") as handle:
        json.dump({"name": "left-pad", "version": "1.0.0"}, handle)
    with pytest.raises(TraceError, match="not a Kineto trace"):
        load_profile(foreign)
