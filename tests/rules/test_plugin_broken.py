"""A rule that raises is one line of the report's rule problems, and the other rules' findings stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import REPO, SHARED_TRACES

BROKEN_PACKAGE = Path(__file__).resolve().parents[1] / "plugin_broken"
TRACE = SHARED_TRACES["resnet50"]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for PYTHONPATH with tests/plugin_broken installed into it by pip."""
    root = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(root), str(BROKEN_PACKAGE)], check=True, capture_output=True, timeout=300)
    return root


def _analyze(out: Path, plugin_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"PYTHONPATH": str(plugin_path)} if plugin_path else {})}
    return subprocess.run([sys.executable, "-m", "convdoctor", "analyze", str(TRACE), "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_plugin_that_raises_is_reported_and_the_run_goes_on(plugin_path: Path, tmp_path: Path):
    result = _analyze(tmp_path / "broken", plugin_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "broken" / "report.json").read_text())
    (problem,) = report["rule_problems"]
    assert problem.startswith("rule CD950 convdoctor_broken_plugin:BrokenRule (from convdoctor-broken-plugin) raised")
    assert "ValueError: no stride recorded for " in problem and "bug in convdoctor" not in problem
    assert f"warning: {problem}" in result.stdout.splitlines()
    assert f"Rule problem: {problem}" in (tmp_path / "broken" / "report.html").read_text()
    # the findings it yielded before raising are left out; every other rule's are there
    clean = _analyze(tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    expected = json.loads((tmp_path / "clean" / "report.json").read_text())["findings"]
    assert expected and report["findings"] == expected


def test_a_built_in_rule_that_raises_is_reported_as_our_bug(monkeypatch: pytest.MonkeyPatch):
    from convdoctor.analyzer.conv.layers import analyze_convs
    from convdoctor.analyzer.trace.reader import load_profile
    from convdoctor.rules.cd101_channels_last import ChannelsLastRule
    from convdoctor.rules.registry import load_rules, run_rules

    def check(self: ChannelsLastRule, analysis: object) -> NoReturn:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(ChannelsLastRule, "check", check)
    results = run_rules(load_rules().rules, analyze_convs(load_profile(TRACE)))
    assert results.problems == [("rule CD101 convdoctor.rules.cd101_channels_last:ChannelsLastRule (from convdoctor) "
                                 "raised ZeroDivisionError: division by zero; its findings were left out "
                                 "(a bug in convdoctor: please report it)")]
    assert "CD101" not in {f.rule_id for f in results.findings} and "CD103" in {f.rule_id for f in results.findings}
