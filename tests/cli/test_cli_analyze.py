"""`convdoctor analyze TRACE|LOGDIR`: offline reports from real traces, and one line for a broken one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import SCHEMA, SHARED_TRACES

from convdoctor.cli import main


def test_analyze_a_gpu_training_trace(tmp_path: Path):
    result = CliRunner().invoke(main, ["analyze", str(SHARED_TRACES["resnet50"]), "--out", str(tmp_path),
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["workload"]["device"] == "cuda" and report["workload"]["mode"] == "train"
    assert report["workload"]["device_name"] == "Tesla V100-DGXS-32GB" and report["workload"]["batch_size"] == 32
    assert report["summary"]["time_basis"] == "device" and len(report["layers"]) == 53
    assert all(f["measurement"] is None and "convdoctor profile" in f["not_measured"] for f in report["findings"])
    assert (tmp_path / "report.html").is_file()


def test_analyze_a_log_dir_with_two_workers(tmp_path: Path, small_cnn_run):
    out, profiled, _ = small_cnn_run
    logdir = tmp_path / "tb"
    shutil.copytree(out / "tb", logdir)
    (trace,) = logdir.rglob("*.pt.trace.json")
    shutil.copy(trace, trace.with_name("worker1.123.pt.trace.json"))
    result = CliRunner().invoke(main, ["analyze", str(logdir), "--out", str(tmp_path / "out"), "--format", "json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert len(reports) == 2
    for report in reports:
        assert [layer["name"] for layer in report["layers"]] == [layer["name"] for layer in profiled["layers"]]
        assert report["workload"]["device"] == "cpu" and report["workload"]["mode"] == "eval"
        assert report["logdir"] == str(logdir)
        # the layout probe travels in the traces: offline, CD101 predicts what the profiling run predicted
        cd101, profiled_cd101 = (next(f for f in r["findings"] if f["rule_id"] == "CD101") for r in (report, profiled))
        assert cd101["saving_bound"] == "estimate" and cd101["estimated_saving"] == profiled_cd101["estimated_saving"]
    assert {p.parent.name for p in (tmp_path / "out").rglob("report.json")} == {trace.name.split(".pt")[0],
                                                                             "worker1.123"}


def test_analyze_a_trace_without_convolutions(tmp_path: Path):
    result = CliRunner().invoke(main, ["analyze", str(SHARED_TRACES["cpu_only"]), "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert "No convolutions" in result.stdout


def test_broken_trace_is_one_line_and_exit_2(tmp_path: Path):
    broken = tmp_path / "rank0.pt.trace.json.gz"
    broken.write_bytes(SHARED_TRACES["resnet50"].read_bytes()[:5000])
    result = CliRunner().invoke(main, ["analyze", str(broken), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("convdoctor: error:")]
    assert len(errors) == 1 and "truncated" in errors[0] and str(broken) in errors[0]
    assert not (tmp_path / "out" / "report.json").exists()


def test_empty_log_dir_is_one_line_and_exit_2(tmp_path: Path):
    result = CliRunner().invoke(main, ["analyze", str(tmp_path)])
    assert result.exit_code == 2
    assert "holds no *.pt.trace.json" in result.stderr


def test_mixed_good_and_bad_workers_analyzes_the_good_and_names_the_bad(tmp_path: Path):
    logdir = tmp_path / "tb" / "run"
    logdir.mkdir(parents=True)
    shutil.copy(SHARED_TRACES["cpu_only"], logdir / "rank0.1.pt.trace.json.gz")
    (logdir / "rank1.1.pt.trace.json").write_text('{"traceEvents": [{"ph": "X", "na')
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "tb"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("convdoctor: error:")]
    assert len(errors) == 1 and "rank1.1.pt.trace.json" in errors[0] and "not valid JSON" in errors[0]
    assert (tmp_path / "out" / "run" / "rank0.1" / "report.json").is_file()
    assert not (tmp_path / "out" / "run" / "rank1.1").exists()


def _write(kind: str, root: Path) -> Path:
    """A path a user may pass that holds no readable trace."""
    root.mkdir()
    if kind == "log_dir_without_traces":
        (root / "run" / "plugins").mkdir(parents=True)
        (root / "run" / "events.out.tfevents.1.host").write_bytes(b"\x00" * 16)
        (root / "run" / "notes.json").write_text("{}")
        return root
    if kind == "directory_named_like_a_trace":
        path = root / "rank0.pt.trace.json"
        path.mkdir()
        return path
    path = root / ("rank0.pt.trace.json.gz" if kind == "zero_byte_gz" else "rank0.pt.trace.json")
    path.write_bytes({"empty_file": b"", "zero_byte_gz": b"", "json_null": b"null", "json_array": b"[{}, 1]"}[kind])
    return path


@pytest.mark.parametrize(("kind", "says"), [
    ("log_dir_without_traces", "holds no *.pt.trace.json"),
    ("empty_file", "is empty (0 bytes)"),
    ("directory_named_like_a_trace", "is a directory named like a trace"),
    ("json_null", "not a Kineto trace"),
    ("json_array", "not a Kineto trace"),
    ("zero_byte_gz", "is empty (0 bytes)"),
])
def test_unreadable_input_is_one_line_and_exit_2(tmp_path: Path, kind: str, says: str):
    path = _write(kind, tmp_path / "in")
    result = CliRunner().invoke(main, ["analyze", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception escaping the CLI
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("convdoctor: error:")]
    assert len(errors) == 1 and says in errors[0] and str(path) in errors[0], result.stderr
    assert result.stderr.count("\n") == 1 + result.stderr.count("analyzing ")  # only progress lines besides it
    assert not (tmp_path / "out" / "report.json").exists()


def test_analyze_never_imports_torch(tmp_path: Path):
    """Torch takes about a second to import and nothing in a trace's analysis needs it; `profile` still works
    (its tests), and every rule loads without it (no rule is reported as failing to load)."""
    script = ("import runpy, sys\n"
              "sys.argv = ['convdoctor', 'analyze', sys.argv[1], '--out', sys.argv[2], '--format', 'json']\n"
              "try:\n"
              "    runpy.run_module('convdoctor', run_name='__main__')\n"
              "finally:\n"
              "    sys.stderr.write(f'torch imported: {\"torch\" in sys.modules}\\n')\n")
    result = subprocess.run([sys.executable, "-c", script, str(SHARED_TRACES["resnet50"]), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rule_problems"] == [] and len(report["layers"]) == 53


def test_analyze_starts_reading_the_trace_before_loading_the_pipeline(tmp_path: Path):
    """The gunzip of the first trace (a thread) overlaps the imports of the pipeline and the rules."""
    script = ("import runpy, sys, threading\n"
              "start = threading.Thread.start\n"
              "def noted(thread):\n"
              "    loaded = [m for m in ('convdoctor.pipeline', 'convdoctor.rules.registry') if m in sys.modules]\n"
              "    sys.stderr.write(f'{thread.name} started after {loaded}\\n')\n"
              "    start(thread)\n"
              "threading.Thread.start = noted\n"
              "sys.argv = ['convdoctor', 'analyze', sys.argv[1], '--out', sys.argv[2]]\n"
              "runpy.run_module('convdoctor', run_name='__main__')\n")
    trace = SHARED_TRACES["cpu_only"]
    result = subprocess.run([sys.executable, "-c", script, str(trace), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"read {trace.name} started after []" in result.stderr
    assert (tmp_path / "report.json").exists()
