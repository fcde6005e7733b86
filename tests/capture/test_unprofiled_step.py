"""The step timed without the profiler at capture, and predicted savings as a share of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES, SHARED_TRACES

from convdoctor.analyzer.capture.recording import record
from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.profile import METADATA_KEY
from convdoctor.analyzer.trace.reader import load_profile

UNPROFILED_STEP_KEY = "unprofiled_step_us"  # RecordedEnvironment's field, as the trace's metadata holds it
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workload = load_workload(EXAMPLES / "small_cnn.py", device="cpu")
    return record(workload, tmp_path_factory.mktemp("tb"), "run", steps=2).publish()[0]


def test_capture_records_the_step_without_the_profiler(trace: Path):
    analysis = analyze_convs(load_profile(trace))
    recorded = json.loads(trace.read_text())[METADATA_KEY][UNPROFILED_STEP_KEY]
    assert analysis.unprofiled_step_us == recorded
    # the same step: the same order of time (how much the profiler adds is for benchmarks/ to say)
    assert 0.1 * analysis.step_time_us < recorded < 10 * analysis.step_time_us
    assert analysis.saving_share(1000.0) == pytest.approx(1000.0 / recorded)
    assert analysis.share(1000.0) == pytest.approx(1000.0 / analysis.step_time_us)


@pytest.mark.parametrize("value", ["12.5", -3.0, 0, True, None, [1.0]])
def test_a_recorded_value_that_is_no_time_is_not_used(trace: Path, tmp_path: Path, value: object):
    data = json.loads(trace.read_text())
    data[METADATA_KEY][UNPROFILED_STEP_KEY] = value
    edited = tmp_path / "edited.pt.trace.json"
    edited.write_text(json.dumps(data))
    analysis = analyze_convs(load_profile(edited))
    assert analysis.unprofiled_step_us is None
    assert analysis.saving_share(1000.0) == analysis.share(1000.0)


@pytest.mark.parametrize("name", ["resnet50", "cpu_only"])
def test_traces_captured_elsewhere_keep_the_traced_step(name: str):
    analysis = analyze_convs(load_profile(SHARED_TRACES[name]))
    assert analysis.unprofiled_step_us is None
    assert analysis.saving_share(1234.0) == analysis.share(1234.0)
