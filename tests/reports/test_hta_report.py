"""The hta section of a real GPU trace's report: report.json (schema 1.4) with figures checked against the raw
events, the terminal lines, and the HTML section as a real headless Chromium renders it (offline, names escaped)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import jsonschema
import pytest
from browser import CHROMIUM, chromium, parse_html
from click.testing import CliRunner
from conftest import DATA, SCHEMA

from convdoctor.cli import main

pytestmark = pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)

TRACE = DATA / "resnet50_v100_pt18_array_step7.json.gz"  # one step: pageable copies and their synchronizations


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("hta")
    result = CliRunner().invoke(main, ["analyze", str(TRACE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text()), result.output


def test_report_json_holds_the_hta_section(analyzed):
    _, report, _ = analyzed
    jsonschema.validate(report, SCHEMA)
    assert report["schema_version"] == "1.4"
    hta = report["hta"]
    assert hta["available"] and hta["reason"] is None
    events = [e for e in json.loads(gzip.decompress(TRACE.read_bytes())) if e.get("ph") == "X"]  # the array form
    (step,) = [(e["ts"], e["ts"] + e["dur"]) for e in events if e["name"] == "ProfilerStep#7"]
    pageable = [e for e in events if e.get("cat") == "Memcpy" and "HtoD (Pageable" in e["name"]
                and step[0] <= e["ts"] < step[1]]
    assert hta["pageable_htod"]["copies"] == len(pageable) > 0
    assert hta["pageable_htod"]["copy_us"] == pytest.approx(sum(e["dur"] for e in pageable))
    syncs = [e for e in events if e.get("cat") == "Runtime" and e["name"].endswith("Synchronize")
             and step[0] <= e["ts"] < step[1]]
    assert hta["synchronizations"]["count"] == len(syncs) > 0
    assert hta["synchronizations"]["blocked_us"] == pytest.approx(sum(e["dur"] for e in syncs))
    device = sorted((e for e in events if e.get("cat") in ("Kernel", "Memcpy", "Memset")), key=lambda e: e["ts"])
    streams = {e["args"]["stream"] for e in device}
    assert {s["stream"] for s in hta["idle_time"]["streams"]} == streams
    for stream in streams:
        mine = [e for e in device if e["args"]["stream"] == stream]
        gaps = sum(b["ts"] - a["ts"] - a["dur"] for a, b in zip(mine, mine[1:]))
        (row,) = [s for s in hta["idle_time"]["streams"] if s["stream"] == stream]
        assert row["idle_us"] == pytest.approx(gaps)
    assert hta["critical_path"]["available"]
    assert "CD122" in {f["rule_id"] for f in report["findings"]}
    cd122 = next(f for f in report["findings"] if f["rule_id"] == "CD122")
    assert cd122["candidate"] is None and cd122["estimated_saving"] > 0 and cd122["measurement"] is None


def test_terminal_has_a_line_per_view_that_finds_something(analyzed):
    _, report, output = analyzed
    hta = report["hta"]
    syncs, pageable = hta["synchronizations"], hta["pageable_htod"]
    assert f"Synchronizations: {syncs['count']} over {syncs['steps']} step(s)" in output
    assert f"Pageable host-to-device copies: {pageable['copies']} over {pageable['steps']} step(s)" in output
    assert "Critical path per step:" in output and "Idle time (ms, whole trace):" in output


def test_a_cpu_trace_says_why_it_has_no_hta_section(tmp_path):
    result = CliRunner().invoke(main, ["analyze", str(DATA / "cpu_only_small.pt.trace.json.gz"), "--out",
                                       str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    hta = json.loads(result.stdout)["hta"]
    assert hta["available"] is False and "CPU trace" in hta["reason"]
    assert "CPU trace" in (tmp_path / "report.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_the_html_section_renders_offline_with_names_escaped(analyzed, tmp_path):
    out, report, _ = analyzed
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from the network
    result = chromium(tmp_path / "profile", "--dump-dom", (out / "report.html").as_uri())
    page = parse_html(result.stdout)
    for section in ("hta", "hta-idle", "hta-launches", "hta-queues", "hta-syncs", "hta-pageable",
                    "hta-critical-path"):
        page.by_id(section)
    cells = {cell.text().strip() for cell in page.find_all("code")}
    kernels = [k["name"] for k in report["hta"]["launches"]["kernels"]]
    assert any("<" in name for name in kernels)  # C++ templates: escaped in the page, read back unchanged
    assert set(kernels) <= cells
    assert len(page.find_all("polyline")) == len(report["hta"]["queue_length"])
