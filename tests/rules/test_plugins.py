"""Third-party rules load like the built-ins, through a real installed distribution's entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED_TRACES

pytestmark = pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)

PLUGIN_PACKAGE = Path(__file__).resolve().parents[1] / "plugin_example"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for PYTHONPATH with tests/plugin_example installed into it by pip, plus two bad plugins."""
    root = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(root), str(PLUGIN_PACKAGE)], check=True, capture_output=True, timeout=300)
    (root / "broken_rules.py").write_text("raise ImportError('needs libfoo, which is not installed')\n")
    copycat = (PLUGIN_PACKAGE / "convdoctor_example_plugin.py").read_text().replace('"CD900"', '"CD101"')
    (root / "copycat_rules.py").write_text(copycat)
    for dist, entry in [("broken_rules", "CD901 = broken_rules:Rule"),
                        ("copycat_rules", "CD101 = copycat_rules:ManyLayersRule")]:
        info = root / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[convdoctor.rules]\n{entry}\n")
    return root


def _run(plugin_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    return subprocess.run([sys.executable, "-m", "convdoctor", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_good_plugin_is_listed_and_broken_ones_are_one_line_each(plugin_path: Path):
    result = _run(plugin_path, "rules")
    assert result.returncode == 0, result.stderr
    assert "CD900  many-layers" in result.stdout and "CD101  channels-last" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("convdoctor: warning:")]
    assert len(warnings) == 2, result.stderr
    broken = next(w for w in warnings if "broken_rules" in w)
    assert "failed to load" in broken and "needs libfoo" in broken and "(from broken_rules)" in broken
    assert any("copycat_rules" in w and "reuses the id CD101" in w for w in warnings)
    assert "Traceback" not in result.stderr


def test_a_third_party_rule_runs_in_analyze(plugin_path: Path, tmp_path: Path):
    result = _run(plugin_path, "analyze", str(SHARED_TRACES["resnet50"]), "--out", str(tmp_path),
                  "--select", "CD900", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (finding,) = report["findings"]
    assert finding["rule_id"] == "CD900" and finding["message"] == "53 conv layers"
    assert len(report["rule_problems"]) == 2  # the report says which plugins were skipped
