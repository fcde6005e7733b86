"""The house: the stages import one way (import-linter's contracts in pyproject.toml) and no module imports
itself back through others, type-only imports included."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("analyzer", "rules", "reports")  # installed as convdoctor.<name> by package-dir mapping

CYCLES = """
import json, grimp
graph = grimp.build_graph("convdoctor")
index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
def visit(node):
    index[node] = low[node] = counter[0]; counter[0] += 1; stack.append(node); on_stack.add(node)
    for nxt in graph.find_modules_directly_imported_by(node):
        if nxt not in index:
            visit(nxt); low[node] = min(low[node], low[nxt])
        elif nxt in on_stack:
            low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
        component = []
        while True:
            member = stack.pop(); on_stack.discard(member); component.append(member)
            if member == node:
                break
        if len(component) > 1:
            found.append(sorted(component))
for module in sorted(graph.modules):
    if module not in index:
        visit(module)
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as it installs, copied: ``convdoctor/`` links the mapped folders in (``analyzer``, ``rules``,
    ``reports``), and the copy follows the links, so a test may edit a module without touching the repository."""
    root = tmp_path_factory.mktemp("layout")
    shutil.copytree(ROOT / "convdoctor", root / "convdoctor", ignore=shutil.ignore_patterns("__pycache__"))
    assert all((root / "convdoctor" / name / "__init__.py").is_file() for name in MAPPED)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _run(layout: Path, *command: str) -> subprocess.CompletedProcess[str]:
    environment = {"PYTHONPATH": str(layout), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(command, cwd=layout, env=environment, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold(installed_layout: Path) -> None:
    result = _run(installed_layout, sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                  "lint_imports_command()", "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "5 kept" in result.stdout


def test_no_module_imports_itself_back(installed_layout: Path) -> None:
    result = _run(installed_layout, sys.executable, "-c", CYCLES)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(("module", "line"), [
    # a trace module that imports a rule breaks two contracts
    ("analyzer.trace.reader", "from convdoctor.rules import base as _reaching_back"),
    # the HTML page rendered from report.json's dict again, not from the Report
    ("reports.html_report", "from convdoctor.reports.json_report import report_to_dict as _the_json_dict"),
], ids=["trace-imports-a-rule", "html-report-imports-json-report"])
def test_a_broken_contract_fails_the_check(installed_layout: Path, tmp_path: Path, module: str, line: str) -> None:
    """The check can fail."""
    broken = tmp_path / "layout"
    shutil.copytree(installed_layout, broken)
    source = broken / "convdoctor" / (module.replace(".", "/") + ".py")
    source.write_text(source.read_text() + f"\n{line}  # noqa\n")
    result = _run(broken, sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                  "lint_imports_command()", "--no-cache")
    assert result.returncode != 0
    assert f"convdoctor.{module}" in result.stdout
