"""The line of user code of an operator, from the Python stacks of a real torch.profiler trace (``with_stack``):
one tiny CPU capture, since none of the GPU traces in tests/data was recorded with stacks."""

from __future__ import annotations

import inspect

import pytest

from convdoctor.analyzer.step.syncs import outermost_operator, user_frame
from convdoctor.analyzer.trace.profile import EventKind
from convdoctor.analyzer.trace.reader import load_profile


def read_back(x):
    return x.sum().item()  # the function the trace must name


@pytest.fixture(scope="module")
def stacked_trace(tmp_path_factory):
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("stack") / "stack.pt.trace.json"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_stack=True) as prof:
        read_back(torch.ones(8))
    prof.export_chrome_trace(str(path))
    return load_profile(path)


def test_user_frame_names_the_function_that_called_item(stacked_trace):
    items = [op for op in stacked_trace.ops if op.name == "aten::_local_scalar_dense"]
    assert items and any(op.kind is EventKind.PYTHON for op in stacked_trace.ops)
    line = inspect.getsourcelines(read_back)[1]  # Kineto names a frame by its function's first line
    frame = user_frame(items[0])
    assert frame is not None and "test_sync_source_line.py" in frame and f"({line})" in frame
    assert outermost_operator(items[0]).name == "aten::item"

