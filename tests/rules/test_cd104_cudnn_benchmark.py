"""CD104 cudnn-benchmark: the decision on the real V100 trace's facts (setting not recorded there), the recorded
setting in a real CPU capture, and the flag-setting transform.

No test here has a CUDA trace recorded by convdoctor (no GPU on the machines that wrote them): the path where the
setting is recorded as off on CUDA is tested through the decision function on the V100 trace's real facts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import MODELS, SHARED_TRACES, capture_analysis
from torch import nn

from convdoctor.analyzer.candidates.torch_parts import BackendFlags
from convdoctor.analyzer.candidates.transforms import backend_flags
from convdoctor.analyzer.capture.workload import load_workload, workload_from
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd104_cudnn_benchmark import CudnnBenchmarkRule, benchmark_facts
from convdoctor.rules.registry import run_rules


@pytest.fixture(scope="module")
def v100():
    return analyze_convs(load_profile(SHARED_TRACES["resnet50"]))


def test_v100_trace_facts(v100):
    facts = benchmark_facts(v100)
    assert facts.recorded is None and facts.on_cuda  # captured outside convdoctor: the setting is unknown
    assert facts.steps > 1 and facts.fixed_shapes and facts.distinct_shapes >= 20  # ResNet-50's conv shapes
    assert any("scudnn" in name or "winograd" in name for name in facts.conv_kernels)


def test_unknown_setting_gives_an_info_finding_without_candidate(v100):
    (finding,) = CudnnBenchmarkRule().check(v100)
    assert finding.rule_id == "CD104" and finding.severity is Severity.INFO
    assert finding.evidence.cudnn_benchmark.startswith("unknown") and finding.evidence.fixed_shapes is True
    assert "unknown" in finding.message and finding.candidate is None
    json.dumps(evidence_fields(finding.evidence))
    quiet = CudnnBenchmarkRule()
    quiet.report_unknown = False
    assert list(quiet.check(v100)) == []


def test_decision_on_the_v100_facts_with_the_setting_known(v100):
    facts = benchmark_facts(v100)
    rule = CudnnBenchmarkRule()
    assert rule.decide(dataclasses.replace(facts, recorded=False)) is Severity.WARNING
    assert rule.decide(dataclasses.replace(facts, recorded=True)) is None
    assert rule.decide(dataclasses.replace(facts, recorded=False, fixed_shapes=False)) is None
    assert rule.decide(dataclasses.replace(facts, recorded=False, on_cuda=False)) is None


def test_cpu_capture_records_the_setting_and_the_rule_does_not_run(tmp_path: Path):
    workload = load_workload(MODELS / "cd106_small_batch.py", device="cpu")
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = not previous  # the capture must record the value at capture time
    try:
        analysis = capture_analysis(workload, tmp_path)
    finally:
        torch.backends.cudnn.benchmark = previous
    assert analysis.profile.environment.cudnn_benchmark is (not previous)
    facts = benchmark_facts(analysis)
    assert facts.recorded is (not previous) and not facts.on_cuda
    results = run_rules([CudnnBenchmarkRule()], analysis)
    assert results.findings == [] and results.skipped["CD104"] == "trace has no CUDA kernels"
    assert list(CudnnBenchmarkRule().check(analysis)) == []  # and check() alone says nothing on a CPU run


class FlagProbe(nn.Module):
    """Returns its input and remembers the backend switches its forward saw."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
        return x


def test_backend_flags_are_set_only_inside_the_forward():
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
    workload = backend_flags(cudnn_benchmark=True, matmul_allow_tf32=True)(
        workload_from(FlagProbe(), torch.ones(2), device="cpu"))
    workload.model(workload.inputs)
    assert workload.model.model.seen == (True, True)
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == before
    with pytest.raises(ValueError, match="unknown backend flags"):
        BackendFlags(nn.Identity(), {"cudnn_fast": True})
