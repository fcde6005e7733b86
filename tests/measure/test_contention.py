"""Busy machines, with real busy-loop processes beside real measurements: no verdict under contention, and a
wait for quiet that ends when the other processes do. Nothing of /proc or the clock is mocked."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import jsonschema
import torch
from conftest import EXAMPLES, SCHEMA, run_cli
from torch import nn

from convdoctor.analyzer.capture.contention import QuietPolicy, contended, read_machine, usable_cores
from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.measure.comparison import measure
from convdoctor.analyzer.measure.results import BenchmarkSettings, Verdict

BUSY_LOOP = Path(__file__).resolve().parents[1] / "busy_loop.py"
QUICK = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0.0, warmup_steps=2, min_rounds=12,
                          max_rounds=12, blocks=3, target_s=0.3, early_stop=False)


@contextmanager
def busy_loops(count: int, seconds: float | None = None) -> Iterator[list[int]]:
    """``count`` real busy-loop processes, each spinning a core (for ``seconds``, or until the block ends); their
    pids. They are started through a shell that exits at once, so they are not this process's descendants (which
    convdoctor counts as its own work): other processes, as a browser or a training job would be."""
    pids = []
    for _ in range(count):
        line = subprocess.run(["sh", "-c", f'"{sys.executable}" "{BUSY_LOOP}" {seconds or ""} >/dev/null 2>&1 & '
                                           'echo $!'], capture_output=True, text=True, check=True).stdout
        pids.append(int(line))
    try:
        time.sleep(0.3)  # started and spinning
        yield pids
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def conv_workload():
    """A conv of about 1 GFLOP a step (10-20 ms on 2 quiet cores): a block of QUICK's 12 rounds lasts long enough
    for /proc's clock ticks to judge it (``tick_margin`` under 0.1 core), as a profile's blocks do. A smaller
    conv's 10 ms blocks went unjudged on a fast CI machine, and the busy loops went unseen."""
    torch.manual_seed(0)
    return workload_from(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()), torch.randn(4, 64, 56, 56),
                         device="cpu")


def test_only_load_on_the_benchmarks_own_cores_counts():
    """Other processes on cores the benchmark leaves free cost it nothing; on its own cores, a quarter core each."""
    assert not contended(3.0, threads=4, cores=8)  # 4 cores free: the load fits there
    assert contended(5.2, threads=4, cores=8)  # 1.2 cores of it on the benchmark's 4 (threshold 1.0)
    assert not contended(0.4, threads=2, cores=2) and contended(0.6, threads=2, cores=2)
    assert not contended(None, threads=2, cores=2)  # unknown (no /proc) is not contention


def test_a_reading_names_the_busiest_other_process():
    with busy_loops(1) as (spinner,):
        reading = read_machine(1.0)
    assert reading is not None and reading.others_busy > 0.7
    (named,) = [p for p in reading.busiest if p.pid == spinner]
    assert named.name == "python busy_loop.py" and named.cores > 0.5
    assert "python busy_loop.py" in reading.describe()


def test_a_reading_leaves_out_this_process_and_its_children():
    """A child of this process (a worker, a compile process) is measured work, not another process."""
    child = subprocess.Popen([sys.executable, str(BUSY_LOOP), "3"])
    try:
        time.sleep(0.3)
        reading = read_machine(1.0)
    finally:
        child.kill()
        child.wait()
    assert reading is not None and all(p.pid != child.pid for p in reading.busiest)


def test_no_verdict_beside_busy_loops():
    """Two busy loops on a machine whose every core the benchmark uses: the blocks are contended, the run may not
    wait (wait_s 0), so the measurement keeps its times but gives no verdict, and says what was busy."""
    workload = conv_workload()
    quiet = QuietPolicy(wait_s=0, threads=torch.get_num_threads())
    with busy_loops(usable_cores()):
        result = measure(workload, workload.copy(), QUICK, quiet=quiet)
    assert result.estimate.verdict is Verdict.UNRELIABLE and not result.reliable
    # its verdict withdrawn at the first contended block, the rest not timed; a block before it may have been too
    # short to judge through /proc's clock ticks (``tick_margin``): one CI run kept one such block first
    assert result.contention.contended_blocks == 1 and result.blocks < QUICK.blocks
    assert result.contention.redone_blocks == 0 and "cores" in result.contention.busiest


def test_the_wait_for_quiet_ends_when_the_busy_loops_do():
    """Busy loops that stop after 4 s: the contended block is redone once the machine is quiet, and the
    measurement holds."""
    workload = conv_workload()
    said: list[str] = []
    quiet = QuietPolicy(wait_s=60, threads=torch.get_num_threads(), say=said.append)
    started = time.perf_counter()
    importlib.import_module("torch._inductor.config")  # the first comparison imports it: 2-4 s under the loops
    with busy_loops(usable_cores(), seconds=4):
        # a warm-up that waited for settled timings could outlast the loops: the first block must start under them
        result = measure(workload, workload.copy(), replace(QUICK, max_warmup_s=0.5), quiet=quiet)
    assert result.reliable and result.estimate.verdict is not Verdict.UNRELIABLE
    assert result.contention.redone_blocks >= 1 and quiet.waited_s >= 1
    assert time.perf_counter() - started >= 4
    assert said and "waiting for quiet" in said[0] and "busy_loop.py" in said[0]


def profile_small(out: Path, *extra: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """`convdoctor profile` of the small example at batch 2, channels_last its only candidate."""
    result = run_cli("profile", str(EXAMPLES / "small_cnn.py"), "--out", str(out), "--steps", "1", "--batch-size",
                     "2", "--select", "CD101", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "report.json").read_text()), result


def test_a_busy_profile_claims_no_speedup(tmp_path: Path):
    """Busy loops on every core through a whole profile that may not wait: no verdict anywhere, no plan, the
    banner first, and --fail-under does not gate on it."""
    with busy_loops(usable_cores()):
        report, result = profile_small(tmp_path, "--wait-quiet", "0", "--fail-under", "1.0")
    measured = [f["measurement"] for f in report["findings"] if f["measurement"]]
    assert measured and all(m["verdict"] == "unreliable" and m["reliable"] is False for m in measured)
    assert report["reliable"] is False and report["plan"] is None
    assert report["busy_machine"]["unreliable"] == len(measured)
    assert "python busy_loop.py" in report["busy_machine"]["busiest"]
    first = result.stdout.splitlines()[0]
    assert first.startswith("Unreliable: other processes kept") and "--wait-quiet" in first
    assert " faster" not in result.stdout and " slower" not in result.stdout
    assert "--fail-under did not gate" in result.stderr
    assert any("profiled steps ran while other processes" in note for note in report["summary"]["notes"])
    html = (tmp_path / "report.html").read_text()
    assert 'id="busy-machine"' in html and "Unreliable: other processes kept" in html
    assert 'id="speedup-chart"' not in html and "no times shown" in html
    jsonschema.validate(report, SCHEMA)


def test_a_profile_waits_for_quiet_then_claims(tmp_path: Path):
    """Busy loops through the start of a profile, stopped once the run says it waits for them: it waits (naming
    them), then measures on a quiet machine and gives a verdict."""
    command = [sys.executable, "-m", "convdoctor", "profile", str(EXAMPLES / "small_cnn.py"), "--out", str(tmp_path),
               "--steps", "1", "--batch-size", "2", "--select", "CD101", "--wait-quiet", "120"]
    said: list[str] = []
    with busy_loops(usable_cores()) as spinners:
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert run.stderr is not None
        for line in run.stderr:  # the progress lines, as they come
            said.append(line)
            if "waiting for quiet" in line:
                break
        for pid in spinners:
            os.kill(pid, signal.SIGKILL)
        said.extend(run.stderr)
    assert run.wait(timeout=300) == 0, "".join(said)
    waits = [line for line in said if "waiting for quiet" in line]
    assert waits and "python busy_loop.py" in waits[0]
    report = json.loads((tmp_path / "report.json").read_text())
    (finding,) = report["findings"]
    assert finding["measurement"]["reliable"] is True and report["reliable"] is True
    assert finding["measurement"]["verdict"] != "unreliable"
    jsonschema.validate(report, SCHEMA)
