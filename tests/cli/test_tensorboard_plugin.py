"""convdoctor's own TensorBoard tab, in a real TensorBoard server and a real headless Chromium.

The log dir holds four runs: the real small_cnn profile (its out dir: report.json, report.html and tb/), the shared
ResNet-50 V100 trace, a CPU trace in a run whose name is markup, and a truncated trace. TensorBoard (127.0.0.1,
a free port) must list the plugin as active, its routes must serve the profile's own report (measured speedups)
and analyze the others on demand; the tab, opened in Chromium, must show the reports without a request leaving
127.0.0.1. A screenshot of the tab lands in test-output/ for a person to look at.
"""

from __future__ import annotations

import base64
import re
import shutil
import time
import urllib.parse
from html import escape, unescape
from pathlib import Path

import pytest
from browser import CHROMIUM, DevTools, page_problems, png_facts
from conftest import OUTPUT, SHARED_TRACES
from markupsafe import escape as markup_escape
from tensorboard.plugins.base_plugin import TBContext
from tensorboard_server import tensorboard
from werkzeug.test import Client

from convdoctor.pipeline import analyze_trace
from convdoctor.tensorboard.plugin import ConvDoctorPlugin

PLUGIN = "/data/plugin/convdoctor"
HOSTILE_RUN = "<script>alert(1)</script>"  # a folder "<script>alert(1)<" holding a folder "script>"
PROFILED_RUN = "small_cnn/tb/small_cnn-eval-cpu"


@pytest.fixture(scope="module")
def board(small_cnn_run, tmp_path_factory):
    """TensorBoard on a log dir with four runs: (server, logdir, the small_cnn report.json)."""
    out, report, _ = small_cnn_run
    logdir = tmp_path_factory.mktemp("logdir")
    shutil.copytree(out, logdir / "small_cnn")
    runs = {"resnet50_v100": SHARED_TRACES["resnet50"], HOSTILE_RUN: SHARED_TRACES["cpu_only"]}
    for run, trace in runs.items():
        (logdir / run).mkdir(parents=True)
        shutil.copy(trace, logdir / run / "worker0.1623143089861.pt.trace.json.gz")
    (logdir / "broken").mkdir()
    (logdir / "broken" / "rank0.1.pt.trace.json.gz").write_bytes(SHARED_TRACES["resnet50"].read_bytes()[:5000])
    with tensorboard(logdir, tmp_path_factory.mktemp("tensorboard")) as server:
        yield server, logdir, report


def report_page(server, run: str, worker: str | None = None) -> tuple[int, str, dict[str, str]]:
    status, body, headers = server.get(PLUGIN + "/report", run=run, **({"worker": worker} if worker else {}))
    return status, body.decode("utf-8"), headers


def test_plugin_is_active_and_lists_every_run(board, small_cnn_run):
    server, _, report = board
    listing = server.json("/data/plugins_listing")["convdoctor"]
    assert listing["enabled"] and listing["tab_name"] == "convdoctor"
    assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": PLUGIN + "/index.js"}
    worker = Path(report["trace_files"][0]).name.split(".pt.trace")[0]
    assert server.json(PLUGIN + "/runs") == [
        {"run": HOSTILE_RUN, "workers": ["worker0.1623143089861"]},
        {"run": "broken", "workers": ["rank0.1"]},
        {"run": "resnet50_v100", "workers": ["worker0.1623143089861"]},
        {"run": PROFILED_RUN, "workers": [worker]},
    ]
    status, body, headers = server.get(PLUGIN + "/index.js")
    assert status == 200 and b"export async function render" in body
    assert headers["Content-Type"].startswith("text/javascript")


def test_a_profiled_run_shows_the_report_profile_wrote(board):
    """The small_cnn run's page is report.html as `convdoctor profile` wrote it, with its measured speedups, under a
    policy that allows its own inline script and nothing from anywhere else."""
    server, logdir, report = board
    status, page, headers = report_page(server, PROFILED_RUN)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert page == (logdir / "small_cnn" / "report.html").read_text(encoding="utf-8")
    measured = [f for f in report["findings"] if f["measurement"] is not None]
    assert measured and page.count("class=\"speedup-point\"") == len(measured) and "95% CI" in page
    for layer in report["layers"]:
        assert f"<code>{escape(layer['name'])}</code>" in page
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'") and "http" not in policy and "'self'" not in policy.split(
        "frame-ancestors")[0]
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}';", policy), policy
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_foreign_gpu_trace_is_analyzed_on_demand(board):
    """The V100 ResNet-50 trace has no report beside it: the plugin analyzes it as `analyze` would."""
    server, _, _ = board
    status, page, _ = report_page(server, "resnet50_v100", "worker0.1623143089861")
    assert status == 200
    expected = analyze_trace(SHARED_TRACES["resnet50"])
    assert f"({len(expected.analysis.layers)} layers)" in page and len(expected.analysis.layers) == 53
    for layer in expected.analysis.layers:
        assert f"<code>{escape(layer.name)}</code>" in page
    assert "Tesla V100-DGXS-32GB" in page and "none measured" in page
    for view in ("overview", "operators", "kernels", "modules", "memory", "hta"):  # the whole-step views, offline
        assert f'<h2 id="{view}">' in page, view
    top_kernel = expected.views.kernels.rows[0].name
    assert str(markup_escape(top_kernel)) in page  # the Kernels view's slowest kernel, as analyze ranks it
    assert report_page(server, "resnet50_v100")[1] == page  # the run's only worker is the default


def test_run_names_are_escaped_and_only_listed_runs_are_served(board):
    server, logdir, _ = board
    status, page, _ = report_page(server, HOSTILE_RUN)
    assert status == 200 and "No convolutions" in page
    assert HOSTILE_RUN not in page and escape(HOSTILE_RUN) in page  # the trace's path, in the Traces section
    for run, worker in (("../small_cnn", None), ("resnet50_v100/../small_cnn", None), (str(logdir / "broken"), None),
                        ("", None), ("resnet50_v100", "../../small_cnn/report"), ("resnet50_v100", "worker0")):
        status, body, _ = report_page(server, run, worker)
        assert status == 404, (run, worker, body[:200])
    status, _, _ = server.get(PLUGIN + "/report")
    assert status == 404


def test_an_unreadable_trace_says_why_in_one_line(board):
    server, _, _ = board
    status, page, headers = report_page(server, "broken")
    assert status == 422 and headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "convdoctor could not analyze this trace" in page and "truncated" in page


@pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)
def test_an_analyzed_report_follows_its_trace(tmp_path):
    """Analyzed reports are kept per version of the trace file: a new trace under the same name is analyzed anew.
    (The real plugin's WSGI routes, without a server.)"""
    trace = tmp_path / "run" / "rank0.1.pt.trace.json.gz"
    trace.parent.mkdir()
    shutil.copy(SHARED_TRACES["cpu_only"], trace)
    plugin = ConvDoctorPlugin(TBContext(logdir=str(tmp_path)))
    client = Client(plugin.get_plugin_apps()["/report"])
    first = client.get("/report?run=run").get_data(as_text=True)
    assert "No convolutions" in first
    assert client.get("/report?run=run").get_data(as_text=True) == first
    shutil.copy(SHARED_TRACES["resnet50"], trace)
    second = client.get("/report?run=run").get_data(as_text=True)
    assert "No convolutions" not in second and "(53 layers)" in second


# ------------------------------------------------------------------------------------------ in Chromium


@pytest.fixture
def devtools(tmp_path: Path):
    if CHROMIUM is None:
        pytest.skip("no `chromium` on PATH (Debian: apt-get install chromium); the tab is not checked in a browser")
    browser = DevTools(tmp_path / "chromium-profile", width=1280, height=900)
    try:
        yield browser
    finally:
        browser.close()


TAB = "document.querySelector('iframe').contentDocument"  # TensorBoard's frame for the plugin
REPORT = "document.getElementById('report').contentDocument"  # the tab's frame for the report


def wait_for_headline(devtools: DevTools, tab: str, containing: str = "", timeout: float = 30) -> str:
    """The headline of the report the tab shows, once one containing CONTAINING has loaded."""
    expression = (f"(function () {{ try {{ var h = {tab}.getElementById('report').contentDocument"
                  ".getElementById('headline'); return h ? h.textContent : null; } catch (e) { return null; } })()")
    deadline = time.monotonic() + timeout
    while (headline := devtools.evaluate(expression)) is None or containing not in headline:
        assert time.monotonic() < deadline, f"the tab showed no report in {timeout} s"
        devtools.drain(0.3)
    return headline


def off_host_requests(devtools: DevTools, base_url: str) -> list[str]:
    host = urllib.parse.urlsplit(base_url).netloc
    urls = [p["request"]["url"] for p in devtools.of("Network.requestWillBeSent")]
    return [u for u in urls if urllib.parse.urlsplit(u).scheme not in ("data", "blob", "about")
            and urllib.parse.urlsplit(u).netloc != host]


def test_the_tab_in_tensorboard(board, devtools):
    """TensorBoard's page at #convdoctor shows the tab with every run in its selector and the first run's report;
    choosing another run shows its report; no request leaves 127.0.0.1 and nothing in the tab throws."""
    server, logdir, _ = board
    written = (logdir / "small_cnn" / "report.html").read_text(encoding="utf-8")
    expected = unescape(re.search(r'id="headline">(.*?)</p>', written).group(1))
    devtools.open(server.base_url + "/#convdoctor")
    assert "No convolutions" in wait_for_headline(devtools, TAB)  # the first run's report
    options = devtools.evaluate(f"Array.from({TAB}.querySelectorAll('#run option')).map(o => o.textContent)")
    assert options == [HOSTILE_RUN, "broken", "resnet50_v100", PROFILED_RUN]
    assert devtools.evaluate(f"{TAB}.querySelectorAll('script').length") == 1  # TensorBoard's; the run name stayed text

    devtools.evaluate(f"(function () {{ var s = {TAB}.getElementById('run'); s.value = '3';"
                      "s.dispatchEvent(new Event('change')); })()")
    assert wait_for_headline(devtools, TAB, containing="Convolutions are") == expected
    # the report's own script runs under the plugin's policy: a click sorts its layer table
    devtools.evaluate(f"{TAB}.getElementById('report').contentDocument.querySelector('#layer-table th').click()")
    assert devtools.evaluate(f"{TAB}.getElementById('report').contentDocument"
                             ".querySelector('#layer-table th').getAttribute('aria-sort')") == "ascending"

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "tensorboard-convdoctor-tab.png"
    shot.write_bytes(base64.b64decode(devtools.call("Page.captureScreenshot", {"format": "png"})["data"]))
    width, height, distinct = png_facts(shot)
    assert (width, height) == (1280, 900) and distinct > 50

    devtools.drain(0.5)
    assert off_host_requests(devtools, server.base_url) == []
    assert devtools.of("Runtime.exceptionThrown") == []
    assert devtools.of("Page.javascriptDialogOpening") == []
    urls = [p["request"]["url"] for p in devtools.of("Network.requestWillBeSent")]
    assert any(u.startswith(server.base_url + PLUGIN + "/report?") for u in urls)


def test_the_tab_alone_is_clean(board, devtools):
    """The tab's own frame (as TensorBoard embeds it) logs nothing, throws nothing and asks only its server, on the
    hostile run (its report is the first) and on the GPU run."""
    server, _, _ = board
    devtools.open(server.base_url + "/data/plugin_entry.html?name=convdoctor")
    assert "No convolutions" in wait_for_headline(devtools, "document")
    devtools.evaluate("(function () { var s = document.getElementById('run'); s.value = '2';"
                      "s.dispatchEvent(new Event('change')); })()")
    assert "(53 layers)" in wait_for_headline(devtools, "document", containing="(53 layers)")
    devtools.drain(0.5)
    assert off_host_requests(devtools, server.base_url) == []
    failed = [p["response"]["url"] for p in devtools.of("Network.responseReceived") if p["response"]["status"] >= 400]
    assert failed == [server.base_url + "/favicon.ico"]  # a top-level page's icon, which TensorBoard does not have
    assert [p for p in page_problems(devtools) if not p.startswith("log error: Failed to load resource")] == []
