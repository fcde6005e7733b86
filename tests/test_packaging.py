"""Packaging: the three code folders install under the convdoctor namespace, with their data and entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli

pytestmark = pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)


def test_wheel_installs_everything_under_convdoctor(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("convdoctor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"convdoctor", next(t for t in top if t.endswith(".dist-info"))}
    for expected in ["convdoctor/cli.py", "convdoctor/pipeline.py", "convdoctor/analyzer/trace/reader.py",
                     "convdoctor/rules/cd101_channels_last.py", "convdoctor/reports/templates/report.html.j2",
                     "convdoctor/reports/report.schema.json", "convdoctor/tensorboard/plugin.py",
                     "convdoctor/tensorboard/static/tensorboard_tab.js"]:
        assert expected in names
    stages = {folder.name for folder in (REPO / "analyzer").iterdir() if (folder / "__init__.py").exists()}
    assert stages == {"trace", "conv", "capture", "candidates", "measure", "step"}
    for stage in stages:  # every stage's subpackage is in the wheel, not only the folders named above
        assert f"convdoctor/analyzer/{stage}/__init__.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[convdoctor.rules]" in entry_points and "CD101 = convdoctor.rules.cd101_channels_last" in entry_points
    assert "convdoctor = convdoctor.cli:main" in entry_points
    assert "[tensorboard_plugins]\nconvdoctor = convdoctor.tensorboard.plugin:ConvDoctorPlugin" in entry_points


def test_python_dash_m_and_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("convdoctor, version ")
