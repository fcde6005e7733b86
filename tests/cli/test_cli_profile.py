"""`convdoctor profile` end to end, as a user runs it: files, report.json fields, terminal summary, modes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from click.testing import CliRunner
from conftest import EXAMPLES, MODELS, SCHEMA, run_cli

from convdoctor.analyzer.measure.results import MIN_EFFECT, BenchmarkSettings
from convdoctor.cli import main


def test_profile_writes_reports_and_traces(small_cnn_run):
    out, report, _ = small_cnn_run
    assert (out / "report.html").is_file() and (out / "report.json").is_file()
    assert report["trace_files"] and all(Path(p).is_file() for p in report["trace_files"])
    assert all(Path(p).parent.parent == out / "tb" for p in report["trace_files"])
    assert not list(out.glob(".*"))  # no scratch files left behind
    jsonschema.validate(report, SCHEMA)


def test_report_json_is_sane_for_small_cnn(small_cnn_run):
    _, report, _ = small_cnn_run
    assert report["schema_version"] == "1.4"
    workload = report["workload"]
    assert workload["model_file"].endswith("small_cnn.py")
    assert (workload["device"], workload["mode"], workload["batch_size"]) == ("cpu", "eval", 8)
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert len(layers) == 15
    stem = layers["stem.0"]
    assert stem["input_shape"] == [8, 3, 96, 96] and stem["weight_shape"] == [32, 3, 3, 3]
    assert stem["output_shape"] == [8, 32, 48, 48]
    assert stem["flops"] == 2 * 8 * 32 * 3 * 9 * 48 * 48
    assert stem["memory_format"] == "contiguous" and stem["groups"] == 1 and stem["calls"] == 2
    times = [layer["time_ms"] for layer in report["layers"]]
    assert times == sorted(times, reverse=True) and times[-1] > 0
    assert 0 < report["summary"]["conv_share"] <= 1
    recorded = json.loads(Path(report["trace_files"][0]).read_text())["convdoctor"]["unprofiled_step_us"]
    assert report["summary"]["unprofiled_step_ms"] == pytest.approx(recorded / 1e3)
    finding = next(f for f in report["findings"] if f["rule_id"] == "CD101")
    measurement = finding["measurement"]
    assert measurement["ci_low"] <= measurement["speedup"] <= measurement["ci_high"]
    within_noise = measurement["ci_low"] <= 1.0 + MIN_EFFECT and measurement["ci_high"] >= 1.0 - MIN_EFFECT
    assert (measurement["verdict"] == "no measurable difference") == within_noise
    assert measurement["max_abs_error"] < 1e-3 and measurement["numerics_ok"] is True
    # measuring probes each layer in channels_last at capture: the whole effect is predicted, beside the measurement
    assert finding["saving_bound"] == "estimate" and finding["evidence"]["layout_probe"]["probed_modules"] >= 30
    assert finding["predicted_speedup"] == pytest.approx(1 / (1 - finding["estimated_saving"]))


def test_terminal_summary_and_progress(small_cnn_run):
    out, report, result = small_cnn_run
    assert report["layers"][0]["name"] in result.stdout  # the slowest layer heads the summary
    assert "CD101 channels-last" in result.stdout
    assert f"tensorboard --logdir {out / 'tb'}" in result.stdout
    assert str(out / "report.html") in result.stdout
    assert "capturing 2 eval steps" in result.stderr and "measuring CD101" in result.stderr
    assert "timing each layer alone, in its layout and in channels_last" in result.stderr
    cd101 = next(f for f in report["findings"] if f["rule_id"] == "CD101")
    assert f"predicted {cd101['predicted_speedup']:.2f}×" in result.stdout
    assert "USDT" not in result.stderr  # the profiler's own chatter is kept out of the user's terminal


def test_html_report_names_layers_and_the_measured_result(small_cnn_run):
    out, report, _ = small_cnn_run
    html = (out / "report.html").read_text()
    for layer in report["layers"]:
        assert f"<code>{layer['name']}</code>" in html
    cd101 = next(f["measurement"] for f in report["findings"] if f["rule_id"] == "CD101")
    harness = BenchmarkSettings()
    assert cd101["extra_blocks"] in (0, harness.extra_blocks)  # a second look only when the first left it open
    if cd101["stopped_early"]:  # settled, or its 30 s spent, after three blocks or more (the default mode)
        assert harness.min_blocks <= cd101["blocks"] < harness.blocks + cd101["extra_blocks"]
    else:
        assert cd101["blocks"] == harness.blocks + cd101["extra_blocks"]
    assert "CD101" in html and f"interleaved rounds in {cd101['blocks']} blocks of fresh copies" in html
    second_looks = [f for f in report["findings"] if f["measurement"] and f["measurement"]["extra_blocks"]]
    assert html.count("a second look: the first ones left the change open or far from the prediction") == len(
        second_looks)
    assert f"{report['summary']['unprofiled_step_ms']:.2f} ms without it" in html


def test_format_json_prints_the_report_and_a_rerun_says_it_overwrites(tmp_path: Path):
    args = ["profile", str(MODELS / "module_level.py"), "--out", str(tmp_path), "--no-measure", "--select", "CD101"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, [*args, "--format", "json"])
    assert second.exit_code == 0
    printed = json.loads(second.stdout)
    assert printed == json.loads((tmp_path / "report.json").read_text())
    assert "overwrote" not in first.stdout
    third = CliRunner().invoke(main, args)
    assert "overwrote the previous report" in third.stdout
    assert printed["findings"][0]["measurement"] is None
    assert "--no-measure" in printed["findings"][0]["not_measured"]
    assert "layout_probe" not in printed["findings"][0]["evidence"]  # the probe is a measurement: not taken
    assert printed["findings"][0]["predicted_speedup"] is None  # no conversions, and no probe: no estimate


def test_module_level_model_with_dict_inputs_and_a_neighbour_import(tmp_path: Path):
    result = run_cli("profile", str(MODELS / "module_level.py"), "--out", str(tmp_path), "--no-measure",
                     "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {layer["name"] for layer in report["layers"]} == {"first", "second"}
    second = next(layer for layer in report["layers"] if layer["name"] == "second")
    assert second["groups"] == 2 and report["workload"]["batch_size"] == 2


def test_train_mode_profiles_backward_and_measures_the_training_step(tmp_path: Path, cli_harness):
    cli_harness(min_rounds=10, early_stop=False)  # the training step timed in real rounds, every block of them
    result = CliRunner().invoke(main, ["profile", str(EXAMPLES / "seed_grouped.py"), "--mode", "train",
                                       "--batch-size", "1", "--steps", "1", "--out", str(tmp_path),
                                       "--select", "CD101"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    (layer,) = report["layers"]
    assert layer["name"] == "<model>" and layer["groups"] == 4
    assert layer["backward_ms"] > 0 and layer["forward_ms"] > 0
    assert report["workload"]["mode"] == "train"
    measurement = report["findings"][0]["measurement"]
    assert measurement["rounds"] >= 10
    assert measurement["max_grad_rel_error"] is not None and measurement["max_grad_rel_error"] < 1e-4


def test_the_users_model_is_never_modified(tmp_path: Path):
    from convdoctor.analyzer.measure.benchmark import BenchmarkSettings
    from convdoctor.api import ProfileOptions, profile

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    model.eval()
    inputs = torch.randn(2, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report, _ = profile(model, inputs, ProfileOptions(out_dir=tmp_path, mode="train", steps=1, select=("CD101",),
                                                      benchmark=BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                                                                                  warmup_s=0, min_rounds=3,
                                                                                  max_rounds=3)))
    assert report.outcomes[0].measurement is not None
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert model[0].weight.is_contiguous() and not model.training and inputs.is_contiguous()


@pytest.mark.parametrize("example", ["seed_conv.py", "seed_grouped.py", "seed_separable.py", "small_cnn.py"])
def test_every_example_loads_and_fits(example: str):
    from convdoctor.analyzer.capture.recording import check_fits
    from convdoctor.analyzer.capture.workload import load_workload

    check_fits(load_workload(EXAMPLES / example, device="cpu"))


def test_fail_under_gates_ci_on_the_measured_plan(tmp_path: Path, cli_harness):
    """seed_separable's depthwise conv runs ~2x faster in channels_last on oneDNN: a 1.1x gate fails, 50x passes.
    The gate reads the measured plan, whatever harness measured it: each run times real blocks of rounds
    (conftest.TEST_HARNESS), without the default harness's waits between blocks."""
    harness = cli_harness()
    args = ["profile", str(EXAMPLES / "seed_separable.py"), "--select", "CD101", "--steps", "1",
            "--out", str(tmp_path)]
    gated = CliRunner().invoke(main, [*args, "--fail-under", "1.1"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert harness.min_blocks <= report["plan"]["measurement"]["blocks"] <= harness.blocks
    low = report["plan"]["measurement"]["ci_low"]
    assert low >= 1.1, "channels_last no longer speeds up a depthwise conv on this CPU: the premise is gone"
    assert gated.exit_code == 1 and "--fail-under 1.1" in gated.stderr
    passed = CliRunner().invoke(main, [*args, "--fail-under", "50"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["plan"]["measurement"]["ci_low"] < 50  # a measured plan, below the gate
    assert passed.exit_code == 0 and "--fail-under" not in passed.stderr
