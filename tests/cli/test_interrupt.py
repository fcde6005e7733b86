"""Ctrl-C (a real SIGINT to a real `convdoctor profile` process) never costs the previous report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MODELS, REPO, run_cli

MODEL = MODELS / "slow_steps.py"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def previous_run(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "out"
    first = run_cli("profile", str(MODEL), "--out", str(out), "--no-measure", "--steps", "1")
    assert first.returncode == 0, first.stderr
    return out, _files(out)


def _interrupt_when(out: Path, stage: str, delay_s: float) -> subprocess.CompletedProcess:
    """Start a profile run, send SIGINT ``delay_s`` after it announces ``stage``, and collect what it says."""
    process = subprocess.Popen(
        [sys.executable, "-m", "convdoctor", "profile", str(MODEL), "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    said = []
    for line in process.stderr:
        said.append(line)
        if line.startswith(f"convdoctor: {stage}"):
            time.sleep(delay_s)
            process.send_signal(signal.SIGINT)
            break
    stdout, rest = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(said) + rest)


def test_ctrl_c_while_measuring_keeps_the_previous_report_and_sets_the_new_traces_aside(previous_run):
    out, before = previous_run
    result = _interrupt_when(out, "measuring", 0.5)
    assert result.returncode == 130, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("convdoctor: interrupted: this run's traces were set aside in"), last
    assert "Traceback" not in result.stderr
    after = _files(out)
    kept = {name: data for name, data in after.items() if not name.startswith("interrupted/")}
    assert kept == before  # report.json, report.html and the previous traces, byte for byte
    aside = [name for name in after if name.startswith("interrupted/") and ".pt.trace.json" in name]
    assert len(aside) == 1 and str(out / "interrupted") in last


@pytest.mark.parametrize("stage, delay_s", [("timing each layer", 0.0), ("capturing", 0.2)])
def test_ctrl_c_while_probing_or_capturing_changes_nothing(previous_run, stage: str, delay_s: float):
    out, before = previous_run
    result = _interrupt_when(out, stage, delay_s)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("convdoctor: interrupted:")
    assert "Traceback" not in result.stderr
    after = _files(out)
    assert {k: v for k, v in after.items() if not k.startswith("interrupted/")} == before
    assert not list((out / "tb").glob(".capture-*"))  # no scratch folder left inside the log dir
