"""CD115 preprocessing-in-forward: triggers on a model that converts, resizes and normalizes its uint8 input in its
own forward; not on small_cnn, whose root-scope ops (flatten) come after its convs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES, MODELS, capture_analysis

from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Severity, evidence_fields
from convdoctor.rules.cd115_preprocessing_in_forward import (
    PreprocessingInForwardRule,
    ops_before_first_conv,
    root_calls,
    root_scope_ops,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _analysis(model_file: Path, tmp_path: Path) -> ConvAnalysis:
    workload = load_workload(model_file, device="cpu")
    return capture_analysis(workload, tmp_path)


@pytest.fixture(scope="module")
def raw_images(tmp_path_factory: pytest.TempPathFactory) -> ConvAnalysis:
    """One capture of a model whose forward takes uint8 2×3×256×256, resizes to 224, normalizes, then convs."""
    return _analysis(MODELS / "cd115_normalize_resize.py", tmp_path_factory.mktemp("cd115_raw"))


def test_triggers_on_resize_and_normalize_in_forward(raw_images):
    findings = list(PreprocessingInForwardRule().check(raw_images))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD115" and finding.rule_name == "preprocessing-in-forward"
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    assert evidence.input_shape == [2, 3, 256, 256] and evidence.input_dtype == "uint8"
    ops = {row.op for row in evidence.ops}
    assert {"aten::to", "aten::_upsample_bilinear2d_aa", "aten::sub", "aten::div"} <= ops
    assert {row.kind for row in evidence.ops} == {"dtype", "resize", "normalize"}
    resize = next(row for row in evidence.ops if row.kind == "resize")
    assert resize.input_shapes == [[2, 3, 256, 256]] and resize.calls_per_step == 1
    cast = next(row for row in evidence.ops if row.op == "aten::to")
    assert cast.input_dtypes == ["uint8"]
    normalize = next(row for row in evidence.ops if row.op == "aten::sub")
    assert normalize.input_shapes == [[2, 3, 224, 224], [1, 3, 1, 1]]  # after the resize, minus the mean buffer
    assert not any("conv" in row.op or "batch_norm" in row.op for row in evidence.ops)
    assert evidence.not_counted == []
    assert all(0 < row.share < evidence.share for row in evidence.ops)
    assert evidence.share == pytest.approx(sum(row.share for row in evidence.ops))
    assert 0.02 <= evidence.share < 0.6  # the resize of 2×3×256×256 against two convs on 224×224
    assert finding.estimated_saving == pytest.approx(evidence.share)
    assert finding.candidate is None and "no automatic candidate" in finding.advice
    assert "DataLoader" in finding.advice and "uint8 2×3×256×256" in finding.message
    assert finding.severity in (Severity.WARNING, Severity.INFO)


def test_only_root_scope_ops_before_the_first_conv_count(raw_images):
    (root, *_) = root_calls(raw_images)
    before = ops_before_first_conv(root)
    names = [op.name for op in before]
    assert names[0] == "aten::to" and "aten::_upsample_bilinear2d_aa" in names
    assert "aten::flatten" in [op.name for op in root_scope_ops(root)]  # root scope, but after the convs
    assert "aten::flatten" not in names


def test_does_not_trigger_when_the_forward_starts_with_a_module(tmp_path: Path):
    analysis = _analysis(EXAMPLES / "small_cnn.py", tmp_path)
    (root, *_) = root_calls(analysis)
    assert "aten::flatten" in [op.name for op in root_scope_ops(root)]
    assert ops_before_first_conv(root) == []
    assert list(PreprocessingInForwardRule().check(analysis)) == []


@pytest.mark.parametrize("min_share, expected", [(0.0, 1), (1.01, 0)])
def test_min_share_option(raw_images, min_share: float, expected: int):
    rule = PreprocessingInForwardRule()
    rule.min_share = min_share
    assert len(list(rule.check(raw_images))) == expected
