"""CD120 compile-freezing: runs by default; fires on an eager eval model, not in training nor on a compiled model;
its candidate compiles with inductor freezing set only while that copy compiles (the weights are frozen in, the
global switch is left as it was), each copy compiles its own frozen graph, a comparison compiles once, and in a plan
it wraps bfloat16 autocast."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import DATA, EXAMPLES, MODELS, capture_analysis, run_cli

from convdoctor.analyzer.candidates.candidate import Candidate, NumericsContract, PlanStage, combine
from convdoctor.analyzer.candidates.torch_parts import Autocast, Compiled
from convdoctor.analyzer.candidates.transforms import autocast_to, compiled, frozen_compiled
from convdoctor.analyzer.capture.workload import load_workload, make_step
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Verdict, compare_first_step
from convdoctor.analyzer.measure.comparison import measure
from convdoctor.api import ProfileOptions, profile
from convdoctor.rules.cd120_compile_freezing import TOLERANCE, CompileFreezingRule
from convdoctor.rules.registry import load_rules, select_rules

MODEL = MODELS / "cd120_conv_bn_eval.py"


def test_runs_by_default_and_can_be_left_out():
    rules = load_rules().rules
    assert "CD120" in [r.id for r in select_rules(rules)]
    assert "CD120" not in [r.id for r in select_rules(rules, ignore=("compile-freezing",))]


def test_a_comparison_compiles_the_frozen_model_once():
    """The copy whose first call compiled for the numerics check serves every block and the peak memory: one
    compile per comparison, where a fresh copy per block would compile each time (a frozen graph guards on its
    parameters' identity)."""
    from torch._dynamo.utils import counters

    workload = load_workload(MODEL, device="cpu")
    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, early_stop=False, blocks=3, warmup_s=0,
                                 warmup_steps=1, max_warmup_s=0.5, min_rounds=3, max_rounds=3)
    before = counters["stats"]["unique_graphs"]
    result = measure(workload, frozen_compiled(workload.copy()), settings)
    assert counters["stats"]["unique_graphs"] - before == 1
    assert not result.fresh_copies and result.first_step_s[1] > 0.5  # the first call compiled
    assert result.peak_bytes[1] is not None


def test_triggers_on_an_eager_eval_model(tmp_path: Path):
    analysis = capture_analysis(load_workload(MODEL, device="cpu"), tmp_path, steps=2)
    (finding,) = CompileFreezingRule().check(analysis)
    assert finding.rule_id == "CD120" and finding.rule_name == "compile-freezing"
    evidence = finding.evidence
    json.dumps(asdict(evidence))
    assert evidence.conv_layers == 2 and set(finding.layers) == {"conv1", "conv2"}
    assert evidence.batch_norms_per_step == 2  # both batch norms, which freezing folds into the convs
    assert evidence.eager_ops_per_step >= 5  # two batch norms, three relus, one add at least
    assert 0.1 <= evidence.conv_share < 1
    assert "eagerly" in finding.message and "freezing" in finding.snippet
    candidate = finding.candidate
    assert candidate.stage is PlanStage.COMPILER and candidate.numerics is NumericsContract.APPROXIMATE
    assert candidate.tolerance == TOLERANCE
    # on the CPU inductor lays the convs out in channels_last itself: the plan does not measure CD101 on top
    assert {rule for rule, _ in candidate.covers} == {"CD109", "CD101"}
    assert "channels_last" not in finding.snippet.replace("channels_last itself", "")


def test_quiet_in_training(tmp_path: Path):
    analysis = capture_analysis(load_workload(MODEL, device="cpu", mode="train"), tmp_path)
    assert analysis.mode == "train" and analysis.layers
    assert list(CompileFreezingRule().check(analysis)) == []


def test_quiet_on_a_compiled_model(tmp_path: Path):
    workload = compiled(load_workload(MODEL, device="cpu"))
    analysis = capture_analysis(workload, tmp_path)
    assert analysis.layers  # the convs are still seen inside the compiled region
    assert list(CompileFreezingRule().check(analysis)) == []


def _bn_edited_output(model: torch.nn.Module, inner: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Outputs before and after scaling bn1's running variance in place, after the first (compiling) call."""
    with torch.no_grad():
        before = model(x)
        inner.bn1.running_var.mul_(4)
        return before, model(x)


def test_freezing_is_set_only_while_that_copy_compiles():
    from torch._inductor import config as inductor_config

    workload = load_workload(MODEL, device="cpu")
    assert inductor_config.freezing is False
    frozen = frozen_compiled(workload.copy()).model.eval()
    assert isinstance(frozen, Compiled) and frozen.freezing
    before, after = _bn_edited_output(frozen, frozen.model, workload.inputs)
    assert torch.equal(before, after)  # the batch norm was folded in as a constant when it compiled
    assert inductor_config.freezing is False  # and the switch is back
    plain = compiled(workload.copy()).model.eval()
    before, after = _bn_edited_output(plain, plain.model, workload.inputs)
    assert not torch.equal(before, after)  # a plain compile, after it, reads the live parameters


def test_numerics_within_tolerance():
    workload = load_workload(MODEL, device="cpu")
    numerics, (_, first_s) = compare_first_step(workload, frozen_compiled(workload.copy()))
    assert numerics.within(TOLERANCE) and numerics.max_rel_error < 1e-4
    assert first_s > 0.5  # the first call compiled


@pytest.mark.slow
def test_every_fresh_copy_compiles_its_own_frozen_graph():
    """Each copy's frozen graph guards on its own parameters: through one shared dynamo frame, torch 2.13 ran the
    ninth copy eagerly (recompile_limit 8). Each copy's step must run compiled code. With the limit at 2 here, the
    third and fourth copies are past it: the same failure, in four compiles instead of ten."""
    from torch._dynamo import config as dynamo_config
    from torch._dynamo.utils import counters
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    limit, copies = 2, 4
    workload = frozen_compiled(load_workload(MODEL, device="cpu"))
    before = counters["stats"]["unique_graphs"]
    with dynamo_config.patch(recompile_limit=limit):
        for _ in range(copies):
            step = make_step(workload.copy())
            step()  # compiles
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            assert any(e.name.startswith("Torch-Compiled Region") for e in prof.events())
            assert not any(e.name == "aten::batch_norm" for e in prof.events())  # folded: no eager batch norm
    assert counters["stats"]["unique_graphs"] - before == copies > limit


def test_in_a_plan_compile_wraps_autocast():
    freeze = Candidate("freeze", frozen_compiled, NumericsContract.APPROXIMATE, TOLERANCE, PlanStage.COMPILER)
    bf16 = Candidate("bf16", autocast_to("bfloat16"), NumericsContract.APPROXIMATE, 2e-2, PlanStage.WRAPPER)
    workload = load_workload(MODEL, device="cpu")
    for order in ([freeze, bf16], [bf16, freeze]):
        plan = combine(order)
        assert plan.stage is PlanStage.COMPILER
        trial = plan.transform(workload.copy())
        assert isinstance(trial.model, Compiled) and isinstance(trial.model.model, Autocast)
    numerics, _ = compare_first_step(workload, trial)
    assert numerics.within(plan.tolerance)  # autocast inside the compiled, frozen graph runs and stays close


def test_in_a_plan_with_the_fold_and_channels_last():
    """The plan's order: CD109's fold (STRUCTURE), channels_last (LAYOUT), autocast (WRAPPER), the frozen compile
    (COMPILER) outermost; the combination compiles and runs within its tolerance."""
    from convdoctor.analyzer.candidates.layout import to_channels_last
    from convdoctor.rules.cd109_conv_bn_fold import fold_conv_bn

    freeze = Candidate("freeze", frozen_compiled, NumericsContract.APPROXIMATE, TOLERANCE, PlanStage.COMPILER)
    bf16 = Candidate("bf16", autocast_to("bfloat16"), NumericsContract.APPROXIMATE, 2e-2, PlanStage.WRAPPER)
    layout = Candidate("channels_last", to_channels_last, NumericsContract.EXACT, 1e-4, PlanStage.LAYOUT)
    fold = Candidate("fold", fold_conv_bn([("conv1", "bn1"), ("conv2", "bn2")]), NumericsContract.EXACT, 1e-4,
                     PlanStage.STRUCTURE)
    plan = combine([freeze, bf16, layout, fold])
    assert plan.title == "fold + channels_last + bf16 + freeze"
    workload = load_workload(MODEL, device="cpu")
    trial = plan.transform(workload.copy())
    assert isinstance(trial.model, Compiled) and isinstance(trial.model.model, Autocast)
    assert isinstance(trial.model.model.model.bn1, torch.nn.Identity)
    assert trial.inputs.is_contiguous(memory_format=torch.channels_last)
    numerics, _ = compare_first_step(workload, trial)
    assert numerics.within(plan.tolerance)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_the_frozen_candidate_is_measured_and_its_compile_time_reported(tmp_path: Path):
    from torch._inductor import config as inductor_config

    settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0, warmup_s=0, min_rounds=4, max_rounds=4, blocks=2)
    workload = load_workload(MODEL, device="cpu")
    with inductor_config.patch(force_disable_caches=True):
        report, _ = profile(workload.model, workload.inputs, ProfileOptions(
            device="cpu", out_dir=tmp_path, steps=1, select=("CD120",), benchmark=settings))
    (outcome,) = report.outcomes
    assert outcome.measurement is not None, outcome.not_measured
    assert outcome.numerics_ok is True
    _, compiled_first = outcome.measurement.first_step_s
    assert compiled_first * 1e3 > 5 * outcome.measurement.estimate.candidate_ms  # the first call compiled
    assert outcome.measurement.estimate.verdict in set(Verdict)
    assert inductor_config.freezing is False


@pytest.mark.slow
def test_a_default_profile_measures_the_frozen_compile_once_and_plans_with_it(tmp_path: Path):
    """`convdoctor profile examples/small_cnn.py` as a user runs it (CD118's worker processes and CD107's
    architecture change left out for time): CD120 is measured by default on the copy its numerics check compiled,
    and a plan led by it leaves the fold out unmeasured, since freezing folds the batch norms itself."""
    result = run_cli("profile", str(EXAMPLES / "small_cnn.py"), "--out", str(tmp_path), "--steps", "2",
                     "--ignore", "CD118,CD107")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    frozen = next(f for f in report["findings"] if f["rule_id"] == "CD120")
    measurement = frozen["measurement"]
    assert measurement is not None and measurement["fresh_copies"] is False
    assert measurement["first_step_s"][1] > 1.0  # the compile
    plan, fold = report["plan"], next(f for f in report["findings"] if f["rule_id"] == "CD109")
    if plan and plan["steps"][0]["rule_id"] == "CD120" and fold["measurement"]["verdict"] == "faster":
        (left,) = [left for left in plan["left_out"] if left["rule_id"] == "CD109"]
        assert left["plan_speedup_with_it"] is None and "its step CD120 does it" in left["reason"]


def test_the_frozen_compile_runs_every_conv_in_channels_last_on_the_cpu():
    """Why a plan led by CD120 leaves CD101 out on the CPU, read from the raw JSON of a real trace of small_cnn
    compiled with freezing from an NCHW model and NCHW inputs: every oneDNN conv inductor called took its input in
    channels_last (the channel stride is 1)."""
    import gzip

    with gzip.open(DATA / "small_cnn_frozen_compiled_cpu.pt.trace.json.gz", "rt") as handle:
        events = json.load(handle)["traceEvents"]
    convs = [e["args"] for e in events if e.get("ph") == "X" and e["name"].startswith("mkldnn::_convolution")]
    assert len(convs) >= 4
    for args in convs:
        dims, strides = args["Input Dims"][0], args["Input Strides"][0]
        assert len(dims) == 4 and strides[1] == 1 and strides[3] == dims[1], (dims, strides)
