"""The docs cannot go stale: the rule catalog is regenerated and compared, the README is short and its test
command is the one CI runs, and docs/architecture.md names every layer of the import contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

README_LIMIT = 150  # lines


def test_rules_md_is_what_make_rules_md_writes(tmp_path: Path):
    out = tmp_path / "rules.md"
    subprocess.run([sys.executable, str(REPO / "docs" / "make_rules_md.py"), str(out)], check=True, timeout=120)
    assert out.read_text() == (REPO / "docs" / "rules.md").read_text(), \
        "docs/rules.md is stale: run python docs/make_rules_md.py"


def test_readme_is_short_and_its_test_command_is_the_one_ci_runs():
    readme = (REPO / "README.md").read_text().splitlines()
    assert len(readme) <= README_LIMIT
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    command = ci[ci.index("# README test command:") + 1]
    assert command.endswith("python -m pytest -q") and command in readme


def test_architecture_md_names_every_layer_of_the_contract():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    architecture = (REPO / "docs" / "architecture.md").read_text()
    missing = [m for layer in layers for m in layer.split(" | ") if f"`{m}`" not in architecture]
    assert not missing, f"docs/architecture.md does not name {missing}"
