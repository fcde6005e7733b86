"""CD106 batch-size: fires on a batch-1 model of tiny ops, not on a heavy conv or a batch-32 GPU trace; its proposal
is measured as samples/s at larger batches and shown in every report format."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import EXAMPLES, MODELS, SCHEMA, SHARED_TRACES, capture_analysis

from convdoctor.analyzer.capture.workload import load_workload, workload_from
from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Verdict
from convdoctor.analyzer.trace.reader import load_profile
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd106_batch_size import BatchSizeRule, overhead_facts

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                          warmup_s=0, warmup_steps=3, max_warmup_s=1.0, min_rounds=6, max_rounds=12, target_s=0.5)


@pytest.fixture(scope="module")
def small_batch(tmp_path_factory: pytest.TempPathFactory):
    workload = load_workload(MODELS / "cd106_small_batch.py", device="cpu")
    return workload, capture_analysis(workload, tmp_path_factory.mktemp("cd106"), steps=2)


def test_triggers_on_batch_one_of_tiny_ops(small_batch):
    _, analysis = small_batch
    (finding,) = BatchSizeRule().check(analysis)
    assert finding.rule_id == "CD106" and finding.severity is Severity.INFO
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    assert evidence.batch_size == 1 and evidence.time_basis == "host"
    assert evidence.ops_per_step == 19  # 8 conv + 8 relu + pool + flatten + linear, no op inside another
    assert 0 <= evidence.short_op_share <= 1 and evidence.median_op_us > 0  # timings: evidence, not the test
    assert evidence.median_conv_flops_per_call == 2 * 8 * 8 * 9 * 16 * 16
    assert finding.larger_batches is not None and finding.candidate is None  # a workload change, not a model one
    assert "batch 1: 19 top-level ops per step" in finding.message
    assert "not part of the combined plan" in finding.advice


def test_does_not_trigger_on_one_heavy_conv(tmp_path: Path):
    analysis = capture_analysis(load_workload(EXAMPLES / "seed_conv.py", device="cpu"), tmp_path)
    facts = overhead_facts(analysis, BatchSizeRule.short_op_us, BatchSizeRule.short_kernel_us)
    assert facts.batch_size == 1 and facts.short_op_share < 0.5  # batch 1, but the op is 7.4 GFLOP of work
    assert list(BatchSizeRule().check(analysis)) == []


def test_does_not_trigger_on_the_batch_32_v100_trace():
    analysis = analyze_convs(load_profile(SHARED_TRACES["resnet50"]))
    facts = overhead_facts(analysis, BatchSizeRule.short_op_us, BatchSizeRule.short_kernel_us)
    assert facts.batch_size == 32 and facts.basis.value == "device"
    assert list(BatchSizeRule().check(analysis)) == []
    rule = BatchSizeRule()
    rule.max_batch = 64  # even as a "small" batch its GPU time is in long kernels and the GPU is mostly busy
    assert facts.short_op_share < 0.5 and facts.gpu_idle_share < 0.5
    assert list(rule.check(analysis)) == []


def test_profile_measures_samples_per_second_at_larger_batches(tmp_path: Path):
    from convdoctor.api import ProfileOptions, profile_file
    from convdoctor.reports.terminal import render_summary

    options = ProfileOptions(device="cpu", out_dir=tmp_path, select=("CD106",), steps=2, benchmark=QUICK)
    report, files = profile_file(MODELS / "cd106_small_batch.py", options)
    (outcome,) = report.outcomes
    assert outcome.measurement is None and report.plan is None  # never a plan step
    sweep = outcome.throughput
    assert sweep is not None and sweep.baseline_batch == 1
    sizes = [p.batch_size for p in sweep.points]
    assert sizes == [2, 4, 8, 16][:len(sizes)] and sweep.stopped
    for point in sweep.points:
        e = point.estimate
        assert e.ci_low <= e.speedup <= e.ci_high and point.measurement.rounds >= 6
        assert point.samples_per_s == pytest.approx(point.baseline_samples_per_s * e.speedup)
    if sweep.best is not None:
        assert sweep.best.estimate.verdict is Verdict.FASTER
    data = json.loads(files.json.read_text())
    jsonschema.validate(data, SCHEMA)
    (entry,) = data["findings"]
    assert entry["throughput"]["baseline_batch"] == 1 and len(entry["throughput"]["points"]) == len(sizes)
    assert entry["throughput"]["best_batch"] == (sweep.best.batch_size if sweep.best else None)
    assert entry["larger_batches"]["factors"] == [2, 4, 8, 16] and entry["measurement"] is None
    html = files.html.read_text()
    assert 'class="throughput"' in html and "not a plan step" in html
    summary = render_summary(report, str(files.html), str(files.json), overwrote=False)
    assert all(f"batch {size}: " in summary for size in sizes) and "stopped: " in summary


def test_without_get_inputs_batch_size_it_says_how_to_enable_measuring(small_batch):
    from convdoctor.analyzer.measure.phase import MeasuringOptions, measure_findings
    from convdoctor.progress import SilentProgress

    workload, analysis = small_batch
    (finding,) = BatchSizeRule().check(analysis)
    plain = workload_from(workload.model, workload.inputs, device="cpu")  # a model object: no get_inputs
    (outcome,) = measure_findings(plain, [finding], MeasuringOptions(benchmark=QUICK), SilentProgress())
    assert outcome.throughput is None and "get_inputs(batch_size" in outcome.not_measured
