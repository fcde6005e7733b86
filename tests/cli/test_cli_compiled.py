"""`convdoctor profile --compiled`, and a model file that returns a compiled model, end to end; `analyze` of the
compiled trace shows the same per-layer view. Each compiles a model (tens of seconds on a busy 2-core machine)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import EXAMPLES, MODELS, SCHEMA, check_small_cnn_compiled_view, run_cli

pytestmark = pytest.mark.slow


def test_a_model_file_returning_a_compiled_model_is_profiled_as_such(tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli("profile", str(MODELS / "compiled_tiny.py"), "--out", str(out), "--steps", "2", "--no-measure",
                     "--select", "CD116,CD109")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    compiled = report["compiled"]
    assert compiled["compiled_by"] == "model file"
    assert [layer["name"] for layer in compiled["layers"]] == ["conv1", "conv2"]
    assert [f["rule_id"] for f in report["findings"]] == []  # CD116 would compile it; compile fused both BNs
    assert "Compiled by the model file" in result.stdout and "returns a compiled model" in result.stdout
    html = (out / "report.html").read_text()
    assert 'id="compiled"' in html and "aten::convolution" in html
    (trace,) = (out / "tb" / "compiled_tiny-eval-cpu-compiled").glob("compiled.*.pt.trace.json")
    analyzed = run_cli("analyze", str(trace), "--out", str(tmp_path / "analyzed"), "--format", "json")
    assert analyzed.returncode == 0, analyzed.stderr
    assert json.loads(analyzed.stdout)["compiled"] == compiled


def test_profile_compiled_attributes_small_cnn_layers(tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli("profile", str(EXAMPLES / "small_cnn.py"), "--compiled", "--batch-size", "4", "--out", str(out),
                     "--steps", "2", "--no-measure", timeout=600)
    assert result.returncode == 0, result.stderr
    (trace,) = (out / "tb" / "small_cnn-eval-cpu-compiled").glob("compiled.*.pt.trace.json")
    check_small_cnn_compiled_view(trace)
    report = json.loads((out / "report.json").read_text())
    assert report["compiled"]["compiled_by"] == "convdoctor" and len(report["compiled"]["layers"]) == 15


def test_compiled_with_nproc_is_refused(tmp_path: Path):
    result = run_cli("profile", str(EXAMPLES / "small_cnn.py"), "--compiled", "--mode", "train", "--nproc", "2",
                     "--out", str(tmp_path))
    assert result.returncode == 2 and "--compiled profiles one process" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
