"""Shared fixtures: paths, a real CLI runner, and one real profile run of the small example model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATA = Path(__file__).resolve().parent / "data"
MODELS = Path(__file__).resolve().parent / "models"
SHARED_TRACES = {
    "resnet50": DATA / "resnet50_v100_train_fp32.pt.trace.json.gz",
    "recsys": DATA / "recsys_a100_train_noconv.pt.trace.json.gz",
    "cpu_only": DATA / "cpu_only_small.pt.trace.json.gz",
}
SCHEMA = json.loads((REPO / "reports" / "report.schema.json").read_text())  # report.json's shipped schema
OUTPUT = REPO / "test-output"  # screenshots and reports for a person to look at


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run `python -m convdoctor ARGS` in a fresh process, as a user would (``env``: its whole environment)."""
    return subprocess.run([sys.executable, "-m", "convdoctor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def small_cnn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess[str]]:
    """One real `convdoctor profile examples/small_cnn.py` run: its out dir, report.json and process result."""
    out = tmp_path_factory.mktemp("small_cnn")
    result = run_cli("profile", str(EXAMPLES / "small_cnn.py"), "--out", str(out), "--steps", "2")
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "report.json").read_text()), result


def capture_analysis(workload, tmp_path: Path, steps: int = 1):
    """Capture ``steps`` profiled steps of a workload with the real profiler and analyze its conv layers."""
    from convdoctor.analyzer.capture.recording import capture
    from convdoctor.analyzer.conv.layers import analyze_convs
    from convdoctor.analyzer.trace.reader import load_profile

    return analyze_convs(load_profile(capture(workload, tmp_path / "tb", "run", steps=steps)[0]))


def file_analysis(model_file: Path, tmp_path: Path, steps: int = 1):
    """Load a model file on the CPU and capture and analyze it: the workload and its ConvAnalysis."""
    from convdoctor.analyzer.capture.workload import load_workload

    workload = load_workload(model_file, device="cpu")
    return workload, capture_analysis(workload, tmp_path, steps)


@pytest.fixture(scope="session")
def seed_conv(tmp_path_factory: pytest.TempPathFactory):
    """One capture of examples/seed_conv.py (the model is a bare nn.Conv2d: the layer is ``<model>``)."""
    return file_analysis(EXAMPLES / "seed_conv.py", tmp_path_factory.mktemp("seed_conv"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: on a shared 2-core box two spinning OpenMP threads make steps
    ten times slower and noisier; the count the session had is put back after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def slow_rank_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One real 2-rank gloo job (`profile --nproc 2`) of a tiny model whose rank 1 sleeps 150 ms in its forward:
    its out dir (traces under tb/) and report.json."""
    out = tmp_path_factory.mktemp("slow_rank")
    result = run_cli("profile", str(MODELS / "ddp_slow_rank1.py"), "--mode", "train", "--nproc", "2", "--steps", "3",
                     "--no-measure", "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "report.json").read_text())


def job_analyses(out: Path):
    """The analyses of a job's rank traces (rank order), rank 0's carrying the job view."""
    from convdoctor.analyzer.conv.job_view import job_view
    from convdoctor.analyzer.conv.layers import analyze_convs
    from convdoctor.analyzer.trace.reader import find_traces, load_profile

    analyses = [analyze_convs(load_profile(t)) for t in find_traces(out / "tb")]
    analyses[0].job = job_view(analyses)
    return analyses
