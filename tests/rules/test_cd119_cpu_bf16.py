"""CD119 cpu-bf16: capture records the CPU's bfloat16 facts; the rule triggers on a real CPU capture whose recorded
facts say native bfloat16 (this VM's AVX2 EPYC has none: the recorded facts are set to a Zen 4's, as that machine's
capture records them), stays quiet where they say otherwise, on this machine's own facts and on a GPU trace; its
candidate runs the CPU workload under bfloat16 autocast within its tolerance."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import MODELS, SHARED_TRACES, capture_analysis

from convdoctor.analyzer.candidates.candidate import NumericsContract, PlanStage
from convdoctor.analyzer.candidates.torch_parts import Autocast
from convdoctor.analyzer.capture.hardware import cpu_flags
from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.measure.benchmark import compare_first_step
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.cd119_cpu_bf16 import TOLERANCE, CpuBf16Rule
from convdoctor.rules.shared.cpu_precision import CpuBf16

MODEL = MODELS / "cd119_fp32_convs.py"
ZEN4 = {"mkldnn_bf16_supported": True, "cpu_low_precision_flags": "avx512_bf16 avx512_fp16 avx_vnni",
        "cpu_capability": "AVX512"}  # what a capture on an AMD EPYC Zen 4 records
SAPPHIRE_RAPIDS = {"mkldnn_bf16_supported": True, "cpu_low_precision_flags": "avx512_bf16 amx_bf16 amx_tile",
                   "cpu_capability": "AVX512"}
SKYLAKE = {"mkldnn_bf16_supported": True, "cpu_low_precision_flags": "", "cpu_capability": "AVX512"}
AVX2 = {"mkldnn_bf16_supported": False, "cpu_low_precision_flags": "", "cpu_capability": "AVX2"}


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    """A real capture of the fp32 model on this machine's CPU (eval)."""
    workload = load_workload(MODEL, device="cpu")
    tmp = tmp_path_factory.mktemp("cd119")
    from convdoctor.analyzer.capture.recording import capture

    return capture(workload, tmp / "tb", "run", steps=1)[0]


def _with_facts(trace: Path, tmp_path: Path, facts: dict) -> object:
    """The analysis of ``trace`` with its recorded CPU facts replaced by ``facts`` (keys set to None are removed)."""
    data = json.loads(trace.read_text())
    for key, value in facts.items():
        if value is None:
            data["convdoctor"].pop(key, None)
        else:
            data["convdoctor"][key] = value
    edited = tmp_path / "edited.pt.trace.json"
    edited.write_text(json.dumps(data))
    return analyze_convs(load_profile(edited))


def test_capture_records_the_cpus_bf16_facts(trace):
    environment = load_profile(trace).environment
    assert environment.mkldnn_bf16_supported is torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert environment.mkldnn_fp16_supported is torch.ops.mkldnn._is_mkldnn_fp16_supported()
    assert environment.cpu_capability == torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    recorded = environment.cpu_low_precision_flags
    if flags is None:
        assert recorded is None
    else:
        assert set(recorded.split()) <= flags
        assert ("avx512_bf16" in recorded) is ("avx512_bf16" in flags)


@pytest.mark.parametrize("facts, decided_by", [(ZEN4, "/proc/cpuinfo flag avx512_bf16"),
                                               (SAPPHIRE_RAPIDS, "/proc/cpuinfo flag amx_bf16")])
def test_triggers_on_fp32_convs_where_the_capture_recorded_native_bf16(trace, tmp_path, facts, decided_by):
    analysis = _with_facts(trace, tmp_path, facts)
    (finding,) = CpuBf16Rule().check(analysis)
    assert finding.rule_id == "CD119" and finding.rule_name == "cpu-bf16"
    assert set(finding.layers) == {layer.name for layer in analysis.layers} and len(finding.layers) == 3
    evidence = finding.evidence
    json.dumps(asdict(evidence))  # report.json serializes it so
    assert evidence.decided_by == decided_by and decided_by in finding.message
    assert evidence.fp32_layers == evidence.conv_layers == 3 and evidence.training is False
    assert 0.1 <= evidence.fp32_conv_share <= 1
    assert evidence.fp32_conv_ms_per_step == pytest.approx(analysis.conv_time_us / 1e3)
    assert "precision change" in finding.advice and "bfloat16" in finding.snippet
    candidate = finding.candidate
    assert candidate.numerics is NumericsContract.APPROXIMATE and candidate.tolerance == TOLERANCE
    assert candidate.stage is PlanStage.WRAPPER


@pytest.mark.parametrize("facts", [SKYLAKE, AVX2, {"mkldnn_bf16_supported": None, "cpu_low_precision_flags": None}],
                         ids=["avx512-without-bf16", "avx2", "not-recorded"])
def test_quiet_where_the_recorded_facts_say_no_native_bf16(trace, tmp_path, facts):
    assert list(CpuBf16Rule().check(_with_facts(trace, tmp_path, facts))) == []


def test_decides_on_this_machine_as_its_facts_say(trace):
    analysis = analyze_convs(load_profile(trace))
    native = CpuBf16.from_environment(analysis.profile.environment).native
    assert native is (torch.ops.mkldnn._is_mkldnn_bf16_supported() and "bf16" in " ".join(sorted(cpu_flags() or ())))
    assert len(list(CpuBf16Rule().check(analysis))) == (1 if native else 0)


def test_min_share_option(trace, tmp_path):
    analysis = _with_facts(trace, tmp_path, ZEN4)
    rule = CpuBf16Rule()
    (finding,) = rule.check(analysis)
    rule.min_share = finding.evidence.fp32_conv_share + 0.01
    assert list(rule.check(analysis)) == []


def test_quiet_on_a_gpu_trace():
    assert list(CpuBf16Rule().check(analyze_convs(load_profile(SHARED_TRACES["resnet50"])))) == []


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_candidate_runs_bfloat16_autocast_on_the_cpu_within_tolerance(trace, tmp_path, mode):
    (finding,) = CpuBf16Rule().check(_with_facts(trace, tmp_path, ZEN4))
    workload = load_workload(MODEL, device="cpu", mode=mode)
    trial = finding.candidate.transform(workload.copy())
    assert isinstance(trial.model, Autocast) and trial.model.dtype is torch.bfloat16
    assert trial.model.device_type == "cpu"
    numerics, _ = compare_first_step(workload, trial)
    assert 0 < numerics.max_rel_error <= TOLERANCE  # bfloat16 does change the numbers
    assert numerics.within(TOLERANCE)


def test_train_capture_says_training(tmp_path):
    analysis = capture_analysis(load_workload(MODEL, device="cpu", mode="train"), tmp_path)
    trace = Path(analysis.profile.trace_path)
    (finding,) = CpuBf16Rule().check(_with_facts(trace, tmp_path, ZEN4))
    assert finding.evidence.training is True and "GradScaler" in finding.snippet and "backward" in finding.snippet
