"""`convdoctor diff`: two real runs of the same model, before and after converting it to channels_last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES

from convdoctor.cli import main

CHANNELS_LAST_MODEL = f'''
import sys, torch
sys.path.insert(0, {str(EXAMPLES)!r})
import small_cnn

def get_model():
    return small_cnn.get_model().to(memory_format=torch.channels_last)

def get_inputs(batch_size=8):
    return small_cnn.get_inputs(batch_size).contiguous(memory_format=torch.channels_last)
'''


@pytest.fixture(scope="module")
def after_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("after")
    (folder / "small_cnn_nhwc.py").write_text(CHANNELS_LAST_MODEL)
    result = CliRunner().invoke(main, ["profile", str(folder / "small_cnn_nhwc.py"), "--out", str(folder / "out"),
                                       "--steps", "2", "--no-measure"])
    assert result.exit_code == 0, result.output
    return folder / "out"


def test_diff_of_two_reports_shows_the_layers_and_the_finding_that_went_away(small_cnn_run, after_run, tmp_path):
    before, before_report, _ = small_cnn_run
    html = tmp_path / "diff.html"
    result = CliRunner().invoke(main, ["diff", str(before / "report.json"), str(after_run / "report.json"),
                                       "--html", str(html)])
    assert result.exit_code == 0, result.output
    after_report = json.loads((after_run / "report.json").read_text())
    assert "CD101" in {f["rule_id"] for f in before_report["findings"]}
    assert "CD101" not in {f["rule_id"] for f in after_report["findings"]}
    gone = result.stdout.split("Findings gone:")[1].split("Findings new:")[0]
    assert "CD101 channels-last" in gone
    step = f"step time {before_report['summary']['step_time_ms']:.3f} -> {after_report['summary']['step_time_ms']:.3f}"
    assert step in result.stdout
    after_ms = {layer["name"]: layer["time_ms"] for layer in after_report["layers"]}
    largest = max(before_report["layers"], key=lambda layer: abs(after_ms[layer["name"]] - layer["time_ms"]))
    assert _layer_lines(result.stdout)[0].split()[0] == largest["name"]
    page = html.read_text()
    assert page.count("<tr><td><code>") == len(before_report["layers"]) == len(after_report["layers"])
    assert "CD101 channels-last" in page


def test_diff_reads_traces_too(small_cnn_run, after_run):
    before, before_report, _ = small_cnn_run
    (trace,) = before_report["trace_files"]
    result = CliRunner().invoke(main, ["diff", trace, str(after_run / "tb")])
    assert result.exit_code == 0, result.output
    names = {layer["name"] for layer in before_report["layers"]}
    listed = _layer_lines(result.stdout)
    assert len(listed) == min(10, len(names)) and {line.split()[0] for line in listed} <= names


def _layer_lines(stdout: str) -> list[str]:
    """The lines under "Largest layer changes" (the ten largest, largest first)."""
    return stdout.split("Largest layer changes (ms per step):\n")[1].split("\n\n")[0].splitlines()


def test_diff_of_something_that_is_not_a_report_is_one_line(tmp_path: Path):
    stray = tmp_path / "package.json"
    stray.write_text('{"name": "left-pad"}')
    result = CliRunner().invoke(main, ["diff", str(stray), str(stray)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"convdoctor: error: {stray}: is JSON but not a convdoctor report.json; " \
                                    "pass a report.json or a trace"
