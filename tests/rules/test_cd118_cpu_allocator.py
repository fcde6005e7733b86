"""CD118 cpu-allocator on real CLI runs: fires under glibc's defaults, stays quiet when the process starts with the
allocator kept, and its candidate is measured in real worker processes, a fresh pair for each block of rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import EXAMPLES, MODELS, PROCESS_HARNESS, REPO

from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Verdict
from convdoctor.analyzer.measure.environment_trial import WorkerError, measure_environment
from convdoctor.rules.cd118_cpu_allocator import KEEP_HEAP

QUICK = BenchmarkSettings(**PROCESS_HARNESS)  # 3 blocks of 4 rounds in all
ALLOCATOR_VARIABLES = ("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD")


@pytest.fixture(scope="module")
def allocator_runs(tmp_path_factory: pytest.TempPathFactory):
    """Real CLI runs of seed_conv.py (CD118 alone, nothing measured), one with glibc's defaults and one started with
    KEEP_HEAP: glibc reads its settings at process start, so each is a process of its own. They run side by side
    (what they report are page-fault counts, each of its own process); ``finished(name)`` waits for one and gives its
    out dir and report.json."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ALLOCATOR_VARIABLES)}
    started = {}
    for name, extra_env in (("defaults", {}), ("kept", KEEP_HEAP)):
        out = tmp_path_factory.mktemp(f"cd118_{name}")
        args = ["profile", str(EXAMPLES / "seed_conv.py"), "--out", str(out / "out"), "--no-measure",
                "--select", "CD118", "--format", "json"]
        with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "convdoctor", *args], cwd=REPO, stdout=stdout,
                                       stderr=stderr, text=True, env={**clean, **extra_env})
        started[name] = (out, process)

    def finished(name: str) -> tuple[Path, dict]:
        out, process = started[name]
        assert process.wait(timeout=300) == 0, (out / "stderr").read_text()
        return out / "out", json.loads((out / "stdout").read_text())

    try:
        yield finished
    finally:
        for _, process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_fires_with_glibc_defaults(allocator_runs):
    tmp_path, report = allocator_runs("defaults")
    assert report["workload"]["allocator"] == "glibc malloc (defaults)"
    (finding,) = [f for f in report["findings"] if f["rule_id"] == "CD118"]
    assert finding["evidence"]["minor_faults_per_step"] >= 256  # counted before convdoctor kept the heap...
    assert "MALLOC_MMAP_THRESHOLD_" in finding["snippet"]
    assert report["workload"]["heap_kept"] is True  # ...for its tracing and measuring
    assert "thresholds fixed by convdoctor" in (tmp_path / "report.html").read_text()


def test_quiet_when_the_process_keeps_its_heap(allocator_runs):
    _, report = allocator_runs("kept")
    assert "MALLOC_MMAP_THRESHOLD_=4294967296" in report["workload"]["allocator"]
    assert [f for f in report["findings"] if f["rule_id"] == "CD118"] == []
    assert report["workload"]["heap_kept"] is False  # the user's own settings, left as they are


def test_the_candidate_is_measured_in_a_fresh_pair_of_worker_processes_per_block(process_setting_outcome):
    """The measuring phase's trial of a KEEP_HEAP candidate on seed_grouped.py (conftest: the phase sends it to
    measure_environment, with QUICK's blocks and rounds; every worker process started is counted)."""
    _, outcome, started = process_setting_outcome
    assert outcome.finding.candidate.process_environment == KEEP_HEAP
    result = outcome.measurement
    assert result is not None, outcome.not_measured
    assert result.blocks == 3 and result.fresh_copies and len(set(started)) == 6  # two real processes per block
    assert result.rounds == 4 and result.estimate.baseline_ms > 0 and result.estimate.candidate_ms > 0
    assert result.estimate.verdict in set(Verdict)
    assert result.numerics.max_abs_error == 0.0  # same seed, same arithmetic: identical outputs
    assert all(seconds > 0 for seconds in result.first_step_s)
    assert all(rss is not None and rss > 50e6 for rss in result.peak_bytes)  # each worker holds torch and a model


def test_a_worker_that_fails_is_one_line():
    """The worker loads the model file named by the workload's source: one whose forward raises."""
    workload = replace(load_workload(EXAMPLES / "seed_grouped.py"), source=str(MODELS / "forward_key_error.py"),
                       input_factory=None)
    with pytest.raises(WorkerError, match="KeyError: 'auxiliary'") as failure:
        measure_environment(workload, KEEP_HEAP, QUICK)
    assert "\n" not in str(failure.value)
