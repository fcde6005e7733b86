"""CD112 cpu-threads: triggers when torch runs fewer intra-op threads than the available cores, not otherwise.

Loading tests/models/cd112_one_thread.py sets the process-wide thread count to 1 (that is how users end up
there); the autouse fixture puts back the count every test started with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import MODELS, SHARED_TRACES, capture_analysis

from convdoctor.analyzer.candidates.candidate import NumericsContract, PlanStage
from convdoctor.analyzer.candidates.torch_parts import IntraOpThreads
from convdoctor.analyzer.candidates.transforms import intra_op_threads
from convdoctor.analyzer.capture.workload import Workload, call_model, load_workload, workload_from
from convdoctor.analyzer.conv.layers import ConvAnalysis, analyze_convs
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.api import ProfileOptions, profile_file
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd112_cpu_threads import CpuThreadsRule

MODEL = MODELS / "cd112_one_thread.py"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
needs_two_cores = pytest.mark.skipif(CORES < 2, reason="this machine has 1 usable core: 1 thread is all of them")


@pytest.fixture(autouse=True)
def restore_threads():
    """Every test leaves the process's intra-op thread count as it found it."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _analysis(workload: Workload, tmp_path: Path) -> ConvAnalysis:
    return capture_analysis(workload, tmp_path)


@needs_two_cores
def test_triggers_when_torch_runs_one_thread(tmp_path: Path):
    workload = load_workload(MODEL, device="cpu")  # its get_model() calls torch.set_num_threads(1)
    assert torch.get_num_threads() == 1
    analysis = _analysis(workload, tmp_path)
    findings = list(CpuThreadsRule().check(analysis))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD112" and finding.rule_name == "cpu-threads"
    evidence = finding.evidence
    assert evidence.threads == 1 and evidence.available_cores == CORES
    assert 0.1 <= evidence.conv_share <= 1.0 and evidence.conv_ms_per_step > 0
    assert evidence.mode == "eval"
    assert f"1 intra-op thread with {CORES} cores available to the process" in finding.message
    assert f"torch.set_num_threads({CORES})" in finding.fix and "OMP_NUM_THREADS" in finding.fix
    assert "DataLoader" in finding.advice and "oversubscribe" in finding.advice
    assert set(finding.layers) == {layer.name for layer in analysis.layers} and len(finding.layers) == 3
    assert finding.estimated_saving is None  # how convs scale with threads is not in the trace
    candidate = finding.candidate
    assert candidate is not None and candidate.numerics is NumericsContract.EXACT
    assert candidate.stage is PlanStage.WRAPPER and 0 < candidate.tolerance <= 1e-4
    fields = evidence_fields(evidence)
    assert json.loads(json.dumps(fields)) == fields


@needs_two_cores
def test_train_mode_finding_has_no_candidate_and_says_why(tmp_path: Path):
    analysis = _analysis(load_workload(MODEL, device="cpu", mode="train"), tmp_path)
    [finding] = CpuThreadsRule().check(analysis)
    assert finding.evidence.mode == "train" and finding.evidence.threads == 1
    assert finding.candidate is None
    assert "train mode" in finding.advice and "backward" in finding.advice


def test_does_not_trigger_with_a_thread_per_core(tmp_path: Path):
    workload = load_workload(MODEL, device="cpu")
    torch.set_num_threads(CORES)  # the fix, applied after the model file lowered the count
    analysis = _analysis(workload, tmp_path)
    assert analysis.profile.environment.threads == analysis.profile.environment.available_cores == CORES
    assert list(CpuThreadsRule().check(analysis)) == []


def test_says_nothing_without_a_recorded_environment(tmp_path: Path):
    foreign = analyze_convs(load_profile(SHARED_TRACES["cpu_only"]))
    assert foreign.profile.environment.threads is None
    assert list(CpuThreadsRule().check(foreign)) == []
    torch.set_num_threads(1)
    analysis = _analysis(load_workload(MODEL, device="cpu"), tmp_path)
    recorded = analysis.profile.environment.to_metadata()
    for missing in ("threads", "available_cores"):  # a trace with convs but without one of the two settings
        analysis.profile.metadata["convdoctor"] = {k: v for k, v in recorded.items() if k != missing}
        assert list(CpuThreadsRule().check(analysis)) == []


def test_says_nothing_on_gpu_workloads():
    analysis = analyze_convs(load_profile(SHARED_TRACES["resnet50"]))  # CUDA kernels, conv layers
    analysis.profile.metadata["convdoctor"] = {"threads": 1, "available_cores": 8, "device": "cuda:0"}
    assert list(CpuThreadsRule().check(analysis)) == []
    analysis.profile.metadata["convdoctor"] = {"threads": 1, "available_cores": 8, "device": "cpu"}
    assert list(CpuThreadsRule().check(analysis)) == []  # the kernels say GPU whatever the record says


@pytest.mark.parametrize("min_share, warning_share, expected", [
    (0.0, 0.0, Severity.WARNING), (0.0, 1.01, Severity.INFO), (1.01, 0.0, None)])
def test_share_options(tmp_path: Path, min_share: float, warning_share: float, expected: Severity | None):
    torch.set_num_threads(1)
    analysis = _analysis(load_workload(MODEL, device="cpu"), tmp_path)
    analysis.profile.metadata["convdoctor"] = {**analysis.profile.environment.to_metadata(), "available_cores": 4}
    rule = CpuThreadsRule()
    rule.min_conv_share, rule.warning_share = min_share, warning_share
    findings = list(rule.check(analysis))
    assert [f.severity for f in findings] == ([expected] if expected else [])


def test_wrapper_sets_threads_for_the_forward_and_restores_them():
    seen: list[int] = []
    model = torch.nn.Conv2d(3, 8, 3)
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    workload = workload_from(model, torch.randn(2, 3, 16, 16), device="cpu")
    torch.set_num_threads(1)
    wrapped = intra_op_threads(2)(workload.copy())
    assert isinstance(wrapped.model, IntraOpThreads)
    with torch.no_grad():
        expected, actual = call_model(workload.model, workload.inputs), call_model(wrapped.model, wrapped.inputs)
    assert seen == [1, 2] and torch.get_num_threads() == 1
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_wrapper_restores_threads_when_the_forward_raises():
    class Raises(torch.nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    torch.set_num_threads(1)
    with pytest.raises(ValueError):
        IntraOpThreads(Raises(), 2)(torch.zeros(1))
    assert torch.get_num_threads() == 1


@needs_two_cores
def test_profile_measures_the_wrapper_and_restores_threads(tmp_path: Path):
    torch.set_num_threads(1)  # a known count, the one the model file sets: only the wrapper could change it
    before = torch.get_num_threads()
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0, min_rounds=5, max_rounds=5,
                                 early_stop=False)  # every block: a settled verdict would stop it sooner
    report, _ = profile_file(MODEL, ProfileOptions(device="cpu", out_dir=tmp_path, steps=1, select=("CD112",),
                                                   benchmark=settings))
    [outcome] = [o for o in report.outcomes if o.finding.rule_id == "CD112"]
    assert outcome.measurement is not None, outcome.not_measured
    assert outcome.numerics_ok is True
    assert outcome.measurement.rounds == 5 and outcome.measurement.estimate.speedup > 0
    assert torch.get_num_threads() == before
