"""The Modules and Memory views in report.json (validated against the shipped schema), the terminal summary, and
the HTML page in a real headless Chromium: the module tree opens by mouse and keyboard, the memory curve is drawn."""

from __future__ import annotations

import jsonschema
import pytest
from browser import CHROMIUM, DevTools, page_problems
from conftest import SCHEMA

from convdoctor.reports.html_report import render_html
from convdoctor.reports.json_report import report_to_dict
from convdoctor.reports.terminal import render_summary


def test_report_json_holds_both_views(step_views_run):
    report = step_views_run.report
    data = report_to_dict(report)
    jsonschema.validate(data, SCHEMA)
    assert data["schema_version"] == "1.4"
    (root,) = data["modules"]["tree"]
    assert root["name"] == "<model>" and root["forward_ms"] == report.modules.roots[0].forward_us / 1e3
    assert [c["name"] for c in root["children"]] == ["features", "head"]
    (device,) = data["memory"]["devices"]
    assert device["peak_bytes"] == report.memory.devices[0].peak_bytes
    assert data["memory"]["top_operators"][0]["name"] == report.memory.top_ops[0].name


def test_terminal_names_the_memory_peak(step_views_run):
    memory = step_views_run.report.memory
    text = render_summary(step_views_run.report, "r.html", "r.json", False)
    (line,) = [line for line in text.splitlines() if line.startswith("Memory peak: ")]
    assert "on cpu" in line and f"step {memory.devices[0].step}" in line and memory.top_ops[0].name in line


@pytest.fixture(scope="module")
def page(step_views_run, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH")
    path = tmp_path_factory.mktemp("step_views_html") / "report.html"
    path.write_text(render_html(step_views_run.report), encoding="utf-8")
    browser = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    try:
        browser.open(path.as_uri())
        yield browser, path
    finally:
        browser.close()


def visible(browser: DevTools, name: str) -> bool:
    return browser.evaluate(f"document.querySelector('.module[data-name=\"{name}\"]').checkVisibility()")


def test_module_tree_opens_by_click_and_keyboard(page):
    browser, _ = page
    assert browser.evaluate("document.querySelector('details.module[data-name=\"<model>\"]').open") is True
    assert visible(browser, "features") and not visible(browser, "features.0")
    browser.click('details.module[data-name="features"] > summary')
    assert visible(browser, "features.0") and not visible(browser, "features.0.conv")
    browser.evaluate("document.querySelector('details.module[data-name=\"features.0\"] > summary').focus()")
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                "windowsVirtualKeyCode": 13, "text": "\r" if kind == "keyDown" else ""})
    assert visible(browser, "features.0.conv")
    row = browser.evaluate("document.querySelector('.module[data-name=\"features.0.conv\"]').textContent")
    assert "Conv2d" in row and "?" not in row  # every figure known for a module of a convdoctor capture


def test_memory_chart_is_drawn_offline(page, step_views_run):
    browser, path = page
    (device,) = step_views_run.report.memory.devices
    points = browser.evaluate("document.querySelector('svg.memory-chart polyline.memory-curve').points.length")
    assert points >= len(device.curve)
    box = browser.evaluate("(function () { var r = document.querySelector('svg.memory-chart polyline')"
                           ".getBoundingClientRect(); return [r.width, r.height]; })()")
    assert box[0] > 300 and box[1] > 50
    assert browser.evaluate("document.querySelectorAll('#memory-ops tbody tr').length") == len(
        step_views_run.report.memory.top_ops)
    requests = [p["request"]["url"] for p in browser.of("Network.requestWillBeSent")]
    assert requests == [path.as_uri()] and page_problems(browser) == []
