"""The whole-step views in report.html, in a real headless Chromium (tests/browser.py): the tables sort on a click
and from the keyboard, the labelled filters keep the matching rows, capped tables say how many rows they leave out,
and no request leaves the page. And `analyze --show operators` on the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from browser import CHROMIUM, DevTools, check_layout, page_problems, parse_html
from conftest import DATA, SCHEMA, run_cli

from convdoctor.pipeline import SHOWN_ROWS, analyze_path

DDP = DATA / "resnet50_a100_ddp_rank0_step5.json.gz"
ROWS = "Array.from(document.querySelectorAll('#{} tbody tr')).filter(function (r) {{ return !r.hidden; }})"


@pytest.fixture(scope="module")
def ddp_report(tmp_path_factory: pytest.TempPathFactory):
    """`analyze` of a real A100 ResNet-50 DDP rank's trace: its Report and files."""
    return analyze_path(DDP, tmp_path_factory.mktemp("views") / "out").written[0]


@pytest.fixture
def devtools(tmp_path: Path):
    if CHROMIUM is None:
        pytest.skip("no `chromium` on PATH: the HTML views are not checked in a browser")
    browser = DevTools(tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()


def cells(devtools: DevTools, table: str, column: int) -> list[str]:
    return devtools.evaluate(f"{ROWS.format(table)}.map(function (r) {{ return r.cells[{column}].textContent.trim(); "
                             "})")


def test_views_sort_filter_and_ask_for_nothing(ddp_report, devtools):
    report, files = ddp_report
    url = files.html.as_uri()
    devtools.open(url)
    devtools.drain(0.3)
    assert [p["request"]["url"] for p in devtools.of("Network.requestWillBeSent")] == [url]
    assert page_problems(devtools) == []
    check_layout(devtools, widths=(480,))  # the page never overflows sideways (this trace's conv layer table is
    # wider than 1200 px with its kernel columns, which check_layout flags at 1280 px: not these views)

    # A click on "calls" sorts by it, largest first; a second click reverses.
    devtools.click("#operators-by-name th:nth-child(2) button")
    calls = [int(c) for c in cells(devtools, "operators-by-name", 1)]
    assert calls == sorted(calls, reverse=True) and calls != [r.calls for r in report.views.operators_shown.rows]
    devtools.click("#operators-by-name th:nth-child(2) button")
    assert [int(c) for c in cells(devtools, "operators-by-name", 1)] == sorted(calls)

    # From the keyboard: focus the "kernel" header's button and press Enter: names A to Z.
    devtools.evaluate("document.querySelector('#kernels-table th:nth-child(1) button').focus()")
    for kind, text in (("keyDown", {"text": "\r"}), ("keyUp", {})):
        devtools.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                 "windowsVirtualKeyCode": 13, **text})
    names = cells(devtools, "kernels-table", 0)
    assert devtools.evaluate("document.querySelector('#kernels-table th:nth-child(1)').getAttribute('aria-sort')") \
        == "ascending"
    assert names != [r.name for r in report.views.kernels_shown.rows]
    assert names == devtools.evaluate(f"{json.dumps(names)}.slice().sort(function (a, b) {{ "
                                      "return a.localeCompare(b, undefined, {numeric: true}); })")

    # The labelled filter keeps the rows whose name holds the text.
    assert devtools.evaluate("document.querySelector('label[for=\"kernels-table-filter\"]') !== null")
    devtools.evaluate("var i = document.getElementById('kernels-table-filter'); i.focus(); i.value = 'GEMM';"
                      "i.dispatchEvent(new Event('input'))")
    kept = cells(devtools, "kernels-table", 0)
    expected = [r.name for r in report.views.kernels_shown.rows if "gemm" in r.name.lower()]
    assert kept and sorted(kept) == sorted(expected)


def test_capped_tables_say_how_many_rows_are_left_out(ddp_report):
    report, files = ddp_report
    page = parse_html(files.html.read_text(encoding="utf-8"))
    views = report.views
    for table, shown, total in (("operators-by-name", views.operators_shown, len(views.operators.by_name)),
                                ("operators-by-shape", views.shapes_shown, len(views.operators.by_shape)),
                                ("kernels-table", views.kernels_shown, len(views.kernels.rows))):
        rows = page.by_id(table).find_all("tbody")[0].find_all("tr")
        assert len(rows) == min(total, SHOWN_ROWS)
        assert shown.more == total - len(rows)
        if shown.more:
            assert f"The top {len(rows)} operators" in page.text() or f"The top {len(rows)} kernels" in page.text()
            assert f"and {shown.more} more in report.json" in page.text()
    data = json.loads(files.json.read_text())
    jsonschema.validate(data, SCHEMA)
    assert len(data["operators"]["by_shape"]) == len(views.operators.by_shape)
    assert data["overview"]["verdict"] in page.text()


def test_show_operators_prints_the_top_operators_and_rejects_other_views(tmp_path):
    result = run_cli("analyze", str(DATA / "cpu_only_small.pt.trace.json.gz"), "--out", str(tmp_path / "a"),
                     "--show", "operators")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "a" / "report.json").read_text())
    block = result.stdout.split("Operators by host total time")[1].splitlines()[2:]
    listed = [re.split(r"\s{2,}", line.strip()) for line in block if line.strip()]
    assert [row[0] for row in listed] == [r["name"] for r in data["operators"]["by_name"][:10]]
    top = data["operators"]["by_name"][:10]
    assert [float(row[3]) for row in listed] == [round(r["host_total_ms"], 3) for r in top]
    bad = run_cli("analyze", str(DATA / "cpu_only_small.pt.trace.json.gz"), "--out", str(tmp_path / "b"),
                  "--show", "nothing")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--show" in bad.stderr
