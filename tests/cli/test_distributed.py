"""`convdoctor profile --nproc 2`: real two-process gloo jobs on the CPU (torch's elastic launcher, DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
from conftest import EXAMPLES, MODELS, REPO, SCHEMA, run_cli


def _run_job(model: str, out: Path, pids: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONVDOCTOR_TEST_PIDS": str(pids)}
    return subprocess.run([sys.executable, "-m", "convdoctor", "profile", str(MODELS / model), "--mode", "train",
                           "--nproc", "2", "--steps", "3", "--out", str(out), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=240, env=env)


def _alive(pid: int) -> bool:
    """A process that still runs (a zombie, reaped by nobody yet, has already exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_every_rank_writes_a_trace_named_by_its_rank(slow_rank_job):
    out, report = slow_rank_job
    (run,) = (out / "tb").iterdir()
    names = sorted(p.name.split(".")[0] for p in run.iterdir())
    assert names == ["rank0", "rank1"]
    assert [Path(t).name.split(".")[0] for t in report["trace_files"]] == ["rank0", "rank1"]
    jsonschema.validate(report, SCHEMA)


def test_both_ranks_are_analyzed_and_communication_is_found(slow_rank_job):
    _, report = slow_rank_job
    job = report["distributed"]
    assert job["world_size"] == 2 and job["backend"] == "gloo"
    assert [r["rank"] for r in job["ranks"]] == [0, 1]
    for rank in job["ranks"]:
        assert rank["comm_ms"] > 0 and rank["allreduce_calls_per_step"] >= 1
        assert 0 <= rank["overlap_ms"] <= rank["comm_ms"]
        assert rank["conv_ms"] > 0
    assert 0 < job["comm_share"] < 1


def test_the_rank_that_sleeps_in_its_forward_is_the_straggler(slow_rank_job):
    _, report = slow_rank_job
    job = report["distributed"]
    straggler = job["straggler"]
    assert straggler is not None and straggler["rank"] == 1 and straggler["decided"]
    assert all(step["slowest_rank"] == 1 for step in job["steps"])
    # rank 1 sleeps 150 ms a step; rank 0 spends that time waiting for it in the allreduce (exposed communication)
    assert straggler["excess_low_ms"] > 75
    assert straggler["extra_untraced_ms"] > straggler["extra_compute_ms"]
    assert "outside any operator" in straggler["cause"]
    rank0, rank1 = job["ranks"]
    assert rank0["exposed_comm_ms"] > rank1["exposed_comm_ms"] + 75
    assert "rank 1 is the straggler" in job["verdict"]
    assert any(f["rule_id"] == "CD203" and "rank 1" in f["message"] for f in report["findings"])


def test_a_worker_that_raises_fails_the_run_in_one_line_and_leaves_no_process(tmp_path: Path):
    pids = tmp_path / "pids"
    pids.mkdir()
    result = _run_job("ddp_raises_rank1.py", tmp_path / "out", pids, "--no-measure")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("convdoctor: error: rank 1: ")
    assert "RuntimeError: rank 1 lost its data shard" in lines[-1]
    assert "Traceback" not in result.stderr
    workers = [int(p.read_text()) for p in pids.glob("rank*.pid")]
    assert len(workers) == 2
    assert not [pid for pid in workers if _alive(pid)]
    assert not list((tmp_path / "out" / "tb").glob("*/*.pt.trace.json*"))


def test_nproc_1_keeps_the_single_device_report(tmp_path: Path):
    result = run_cli("profile", str(MODELS / "ddp_slow_rank1.py"), "--mode", "train", "--nproc", "1", "--steps", "1",
                     "--no-measure", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert "distributed" not in report
    assert [Path(t).name.split(".")[0] for t in report["trace_files"]] == ["worker0"]


def test_nproc_with_eval_is_refused_in_one_line(tmp_path: Path):
    result = run_cli("profile", str(EXAMPLES / "small_cnn.py"), "--nproc", "2", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("convdoctor: error: --nproc needs --mode train")


def test_analyze_of_a_job_log_dir_compares_its_ranks(slow_rank_job, tmp_path):
    """`analyze` on the job's log dir, traces only: rank 0's report carries the job view, with the same straggler
    the profile found; rank 1's report is its own."""
    out, profiled = slow_rank_job
    result = run_cli("analyze", str(out / "tb"), "--out", str(tmp_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert len(reports) == 2
    first, second = reports
    assert "rank0" in first["trace_files"][0] and "rank1" in second["trace_files"][0]
    job = first["distributed"]
    assert job["world_size"] == 2 and [r["rank"] for r in job["ranks"]] == [0, 1]
    assert job["straggler"]["rank"] == profiled["distributed"]["straggler"]["rank"] == 1
    assert second.get("distributed") is None
