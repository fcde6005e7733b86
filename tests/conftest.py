"""Shared fixtures: paths, a real CLI runner, and one real profile run of the small example model."""

from __future__ import annotations

import functools
import gzip
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# Tests that read traces and time nothing: the README's test command runs them in two processes (pytest-xdist)
# before the others, which time steps and must run alone (a second process on the cores is the contention they detect).
# These paths are marked here; a test elsewhere that times nothing carries ``pytest.mark.analysis`` itself.
ANALYSIS_PATHS = ("trace", "step", "test_real_traces.py", "test_architecture.py", "test_docs.py", "test_security.py")
TIMED_FIXTURES = frozenset({"small_cnn_run"})  # a real profile run, measured: with the timed tests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the analysis tests (``-m analysis``)."""
    tests = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve().relative_to(tests)
        if path.parts[0] in ANALYSIS_PATHS and not TIMED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.analysis)


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run `python -m convdoctor ARGS` in a fresh process, as a user would (``env``: its whole environment)."""
    return subprocess.run([sys.executable, "-m", "convdoctor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


# The rules small_cnn_run leaves out: CD107's architecture change has its own end-to-end test
# (tests/rules/test_cd107_grouped_conv.py); CD118's candidate is a process setting, timed in a fresh pair of worker
# processes per block (twelve torch imports with the default six blocks: about half of the run). Those trials are
# measured by process_setting_outcome below, for tests/rules/test_cd118_cpu_allocator.py and
# tests/test_measuring_phase.py; the rule's CLI runs are in test_cd118_cpu_allocator.py. CD120's candidate compiles
# the model with inductor freezing (10-25 s here, and again for each plan step after it): its comparison is tested
# in tests/rules/test_cd120_compile_freezing.py, and a whole profile with it under `pytest -m slow`.
SMALL_CNN_IGNORES = ("--ignore", "CD118,CD107,CD120")


@pytest.fixture(scope="session")
def small_cnn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess[str]]:
    """One real `convdoctor profile examples/small_cnn.py` run (every in-process rule, the default harness): its out
    dir, report.json and process result."""
    out = tmp_path_factory.mktemp("small_cnn")
    result = run_cli("profile", str(EXAMPLES / "small_cnn.py"), "--out", str(out), "--steps", "2", *SMALL_CNN_IGNORES)
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "report.json").read_text()), result


# A harness for tests of what surrounds a measurement (a gate, a mode, a report), not of the harness's own defaults
# (those are small_cnn_run's and tests/test_benchmark.py's): the default six blocks of real interleaved rounds on
# fresh copies, but without the 5 s between blocks (a wait that, with one candidate, is most of a default
# measurement), without the second look, and with a third of the timed time.
TEST_HARNESS = {"block_spacing_s": 0, "extra_blocks": 0, "warmup_s": 0.0, "warmup_steps": 2, "max_warmup_s": 2.0,
                "target_s": 2.0}


@pytest.fixture
def cli_harness(monkeypatch: pytest.MonkeyPatch):
    """Run `convdoctor profile` in this process (CliRunner) with these harness settings: ``cli_harness(**changes)``
    sets them for the CLI's calls to the library (convdoctor.api.profile_file) until the test ends."""
    from dataclasses import replace

    import convdoctor.api
    from convdoctor.analyzer.measure.benchmark import BenchmarkSettings

    real = convdoctor.api.profile_file

    def use(**changes: float) -> BenchmarkSettings:
        settings = BenchmarkSettings(**{**TEST_HARNESS, **changes})
        monkeypatch.setattr(convdoctor.api, "profile_file",
                            lambda path, options, *rest: real(path, replace(options, benchmark=settings), *rest))
        return settings

    return use


def capture_analysis(workload, tmp_path: Path, steps: int = 1):
    """Capture ``steps`` profiled steps of a workload with the real profiler and analyze its conv layers."""
    from convdoctor.analyzer.capture.recording import capture
    from convdoctor.analyzer.conv.layers import analyze_convs
    from convdoctor.analyzer.trace.reader import load_profile

    return analyze_convs(load_profile(capture(workload, tmp_path / "tb", "run", steps=steps)[0]))


def raw_graph_calls(trace: Path) -> tuple[list[list[dict[str, Any]]], int]:
    """Read from a compiled model's raw trace JSON, independently of convdoctor's parser: each call of a compiled
    graph (``## Call CompiledFxGraph``) inside a ``ProfilerStep``, as the events directly inside it in start order,
    and the number of steps."""
    opener = gzip.open if trace.name.endswith(".gz") else open
    with opener(trace, "rt") as handle:
        events = [e for e in json.load(handle)["traceEvents"] if e.get("ph") == "X"]
    steps = [e for e in events if e["name"].startswith("ProfilerStep#")]

    def within(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
        return inner is not outer and inner["tid"] == outer["tid"] and outer["ts"] <= inner["ts"] \
            and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"]

    calls = [e for e in events if e["name"].startswith("## Call CompiledFxGraph") and any(within(e, s) for s in steps)]
    result = []
    for call in calls:
        inside = [e for e in events if within(e, call)]
        direct = [e for e in inside if not any(within(e, o) and (o["ts"], -o["dur"]) < (e["ts"], -e["dur"])
                                               for o in inside)]
        result.append(sorted(direct, key=lambda e: e["ts"]))
    return result, len(steps)


def small_cnn_modules() -> dict[str, object]:
    """examples/small_cnn.py's modules by qualified name, in registration order."""
    sys.path.insert(0, str(EXAMPLES))
    import small_cnn

    return dict(small_cnn.get_model().named_modules())


def _batch_norm_after(modules: dict[str, object], conv: str) -> str:
    """The BatchNorm registered right after a conv (small_cnn registers each conv's BN next to it)."""
    names = list(modules)
    following = names[names.index(conv) + 1]
    assert type(modules[following]).__name__ == "BatchNorm2d"
    return following


def check_small_cnn_compiled_view(trace: Path) -> Any:
    """Every conv of small_cnn has one aten::convolution call, whose time is the raw trace's, and the generated
    kernels holding the BatchNorm after it; used on the committed trace and on a fresh `profile --compiled` run."""
    from convdoctor.analyzer.conv.compiled import PROVENANCE, compiled_view
    from convdoctor.analyzer.trace.reader import load_profile

    view = compiled_view(load_profile(trace))
    modules = small_cnn_modules()
    convs = [name for name, m in modules.items() if type(m).__name__ == "Conv2d"]
    assert sorted(layer.name for layer in view.layers) == sorted(convs)
    opener = gzip.open if trace.name.endswith(".gz") else open
    with opener(trace, "rt") as handle:
        (graph,) = json.load(handle)["convdoctor"]["inductor"]["graphs"]
    extern_sites = [modules_ for kernel, modules_ in graph if kernel == "extern_kernels.convolution"]
    calls, steps = raw_graph_calls(trace)
    expected: Counter[str] = Counter()
    generated_us = 0.0
    for events in calls:
        convolutions = [e for e in events if e["name"] == "aten::convolution"]
        assert len(convolutions) == len(extern_sites) == len(convs)
        for event, site in zip(convolutions, extern_sites):
            (conv,) = [m for m in site if m in convs]
            expected[conv] += event["dur"]
        generated_us += sum(e["dur"] for e in events if e["name"].startswith("graph_0_cpp_fused"))
    for layer in view.layers:
        (extern,) = layer.extern
        assert extern.kernel == "aten::convolution" and extern.attribution == PROVENANCE
        assert extern.ms_per_step == pytest.approx(expected[layer.name] / 1e3 / steps, rel=1e-9)
        bn = _batch_norm_after(modules, layer.name)
        assert bn in layer.neighbours and any(bn in k.modules for k in layer.fused)
        assert view.handled(bn) is not None and view.handled(bn).startswith("fused into cpp_fused_")
    generated = sum(k.ms_per_step or 0 for k in view.kernels if not k.extern and k.kernel.startswith("cpp_fused"))
    assert generated == pytest.approx(generated_us / 1e3 / steps, rel=1e-9)
    assert view.compiled_by == "convdoctor" and not view.freezing and view.folded == ()
    return view


def file_analysis(model_file: Path, tmp_path: Path, steps: int = 1):
    """Load a model file on the CPU and capture and analyze it: the workload and its ConvAnalysis."""
    from convdoctor.analyzer.capture.workload import load_workload

    workload = load_workload(model_file, device="cpu")
    return workload, capture_analysis(workload, tmp_path, steps)


@pytest.fixture(scope="session")
def seed_conv(tmp_path_factory: pytest.TempPathFactory):
    """One capture of examples/seed_conv.py (the model is a bare nn.Conv2d: the layer is ``<model>``)."""
    return file_analysis(EXAMPLES / "seed_conv.py", tmp_path_factory.mktemp("seed_conv"))


# Blocks of few rounds for worker-process trials: each block starts a fresh pair of processes (a torch import each).
PROCESS_HARNESS = {"block_spacing_s": 0, "extra_blocks": 0, "warmup_s": 0.0, "warmup_steps": 2, "min_rounds": 4,
                   "max_rounds": 4, "max_warmup_s": 2.0, "blocks": 3}


@dataclass(frozen=True)
class Named:
    """A test finding's evidence: its name, which is also its message."""

    name: str

    def message(self) -> str:
        return self.name


@pytest.fixture(scope="session")
def process_setting_outcome():
    """One real measuring phase of a process-setting candidate (CD118's allocator setting, KEEP_HEAP) on
    examples/seed_grouped.py, with PROCESS_HARNESS: its workload, its outcome (a finding "allocator", CD999), and the
    pid of every worker process it started, in order. Shared by the phase's test (worker processes, kept out of the
    plan) and CD118's (a fresh pair of real processes per block): each pair is a torch import or two."""
    from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract
    from convdoctor.analyzer.capture.workload import load_workload
    from convdoctor.analyzer.measure import environment_trial
    from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
    from convdoctor.analyzer.measure.phase import MeasuringOptions, measure_findings
    from convdoctor.progress import SilentProgress
    from convdoctor.rules.base import Finding, Severity
    from convdoctor.rules.cd118_cpu_allocator import KEEP_HEAP

    started: list[int] = []

    class CountedWorker(environment_trial._Worker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self.process.pid)

    workload = load_workload(EXAMPLES / "seed_grouped.py")
    candidate = Candidate(title="allocator", transform=lambda w: w, numerics=NumericsContract.EXACT,
                          tolerance=1e-5, process_environment=KEEP_HEAP)
    finding = Finding(rule_id="CD999", rule_name="allocator", severity=Severity.INFO, evidence=Named("allocator"),
                      fix="allocator", advice="", snippet="", estimated_saving=0.1, candidate=candidate)
    settings = BenchmarkSettings(**PROCESS_HARNESS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(environment_trial, "_Worker", CountedWorker)
        (outcome,) = measure_findings(workload, [finding], MeasuringOptions(benchmark=settings), SilentProgress())
    return workload, outcome, started


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


# ------------------------------------------------------------------ the Modules and Memory views (tests/step/)

STEP_VIEWS = MODELS / "step_views.py"  # a tiny nested net: convs, BatchNorm, a Linear head


@dataclass(frozen=True)
class StepViewsRun:
    """A train-mode capture of STEP_VIEWS (one profiled step, memory recorded), analyzed once."""

    trace: Path
    events: list[dict[str, Any]]  # the trace's raw JSON events
    report: Any  # the Report of the trace, analyzed as `convdoctor analyze` does


def raw_events(trace: Path) -> list[dict[str, Any]]:
    """The events of a trace file as plain JSON (object or array form, gzip or not)."""
    opener = gzip.open if trace.name.endswith(".gz") else open
    with opener(trace, "rt", encoding="utf-8") as file:
        data = json.load(file)
    return data["traceEvents"] if isinstance(data, dict) else data


@pytest.fixture(scope="session")
def step_views_run(tmp_path_factory: pytest.TempPathFactory) -> StepViewsRun:
    """One real train-mode capture of STEP_VIEWS, its raw events and its offline Report (tests/step/)."""
    from convdoctor.analyzer.capture.recording import capture
    from convdoctor.analyzer.capture.workload import load_workload
    from convdoctor.pipeline import analyze_trace

    workload = load_workload(STEP_VIEWS, device="cpu", mode="train")
    (trace,) = capture(workload, tmp_path_factory.mktemp("step_views") / "tb", "run", steps=1)
    return StepViewsRun(trace, raw_events(trace), analyze_trace(trace))
@functools.cache
def cached_profile(path: Path):
    """A real trace's Profile, parsed once per session for the tests that only read it."""
    from convdoctor.analyzer.trace.reader import load_profile

    return load_profile(path)
