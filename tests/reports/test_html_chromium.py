"""report.html in a real headless Chromium: it renders, runs its script without errors, asks for nothing over the
network, sorts its layer table on a real click, lays out without overflow, and shows hostile module names as text.

Chromium is driven by tests/browser.py: command-line flags as a person would run it, and the DevTools protocol
where a test needs to see network requests, exceptions and dialogs, or to click.

Screenshots land in test-output/ for a person to look at.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from browser import CHROMIUM, DevTools, check_layout, chromium, console_lines, page_problems, parse_html, png_facts
from conftest import OUTPUT
from torch import nn

if CHROMIUM is None:
    pytest.skip("no `chromium` on PATH (Debian: apt-get install chromium); the HTML report is not checked in a "
                "browser", allow_module_level=True)

from convdoctor.api import ProfileOptions, profile  # noqa: E402

HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_ATTRIBUTE = 'x" onerror="alert(1)'
HOSTILE_SINGLE_QUOTE = "y' onerror='alert(2)"
HOSTILE_URL = "javascript:alert(3)"
# Attributes a browser follows or runs: a name there could act; elsewhere (the module tree's data-name) it is text.
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "style", "srcdoc"}
LONG_NAME = "W" * 70  # one unbreakable word, wider than any table column
LABEL_WIDTH = 292  # the layer chart's label column: labels must end before the bars start at x=300


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def devtools(tmp_path: Path):
    browser = DevTools(tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()


class HostileNames(nn.Module):
    """Five convolutions whose module names are markup, two attribute breakouts, a javascript: URL and one very
    long word."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module(HOSTILE_SCRIPT, nn.Conv2d(3, 4, 3))
        self.add_module(HOSTILE_ATTRIBUTE, nn.Conv2d(4, 4, 3))
        self.add_module(HOSTILE_SINGLE_QUOTE, nn.Conv2d(4, 4, 3))
        self.add_module(HOSTILE_URL, nn.Conv2d(4, 4, 3))
        self.add_module(LONG_NAME, nn.Conv2d(4, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self._modules.values():
            x = conv(x)
        return x


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory):
    """A real profile (Python API, no measuring) of HostileNames: the Report and its files."""
    out = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    report, files = profile(HostileNames(), torch.randn(1, 3, 16, 16),
                            ProfileOptions(out_dir=out, measure=False, steps=1))
    return report, files


# ---------------------------------------------------------------------------------------------------- tests


def test_report_is_self_contained(small_cnn_run):
    """Nothing in report.html can make the browser fetch anything: no external tags, links, sources or CSS urls."""
    out, _, _ = small_cnn_run
    text = (out / "report.html").read_text(encoding="utf-8")
    document = parse_html(text)
    tags = Counter(e.tag for e in document.iter())
    for tag in ("link", "iframe", "img", "object", "embed", "video", "audio", "source", "base", "frame", "form"):
        assert tags[tag] == 0, f"report.html has a <{tag}>"
    assert tags["script"] == 1 and tags["style"] == 1
    for element in document.iter():
        for name in ("src", "srcset", "href", "xlink:href", "action", "formaction", "data", "poster", "background"):
            value = element.attrs.get(name)
            assert value is None or value.startswith("#"), f"<{element.tag} {name}={value!r}> leaves the page"
    style = "".join(e.text() for e in document.find_all("style"))
    style += " ".join(e.attrs.get("style", "") for e in document.iter())
    style += " ".join(e.attrs.get("clip-path", "") + e.attrs.get("fill", "") for e in document.iter())
    assert "@import" not in style
    assert re.findall(r"url\(\s*['\"]?(?!#)", style) == [], "a CSS url() that points outside the page"
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", text), "an absolute URL in src/href"
    # Rule docs cite their references as plain text (the one place a URL may appear), never as a link or source.
    references = "".join(e.text() for e in document.find_all("div", class_="doc-body"))
    assert len(re.findall(r"https?://", text)) == len(re.findall(r"https?://", references))


@pytest.fixture(scope="module")
def small_cnn_dom(small_cnn_run, tmp_path_factory):
    """small_cnn's report.html as Chromium left it after its script ran (--dump-dom), and that run's result."""
    out, _, _ = small_cnn_run
    result = chromium(tmp_path_factory.mktemp("dump") / "profile", "--dump-dom", (out / "report.html").as_uri())
    return parse_html(result.stdout), result


def test_page_renders_in_chromium(small_cnn_run, small_cnn_dom):
    """--dump-dom after the page ran: headline, both charts, one table row per layer in report.json order, no
    console output."""
    _, report, _ = small_cnn_run
    dom, result = small_cnn_dom
    assert result.returncode == 0, result.stderr[-3000:]
    assert console_lines(result.stderr) == []
    headline = dom.by_id("headline").text()
    assert f"({len(report['layers'])} layers)" in headline, headline
    breakdown = dom.by_id("breakdown-chart")
    assert breakdown.tag == "svg" and len(breakdown.find_all("rect")) == 3
    widths = [float(r.attrs["width"]) for r in breakdown.find_all("rect")]
    assert all(w >= 0 for w in widths) and sum(widths) == pytest.approx(1000, abs=1.5), widths
    chart = dom.by_id("layer-chart")
    assert chart.tag == "svg"
    bars = chart.find_all("rect", class_="bar")
    assert len(bars) == min(len(report["layers"]), 15)
    assert [b.find_all("title")[0].text().split(":")[0] for b in bars] == \
        [layer["name"] for layer in report["layers"][:15]]
    rows = dom.by_id("layer-table").find_all("tbody")[0].find_all("tr")
    names = [row.find_all("td")[0].find_all("code")[0].text() for row in rows]
    assert names == [layer["name"] for layer in report["layers"]]
    for known in ("stem.0", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.downsample.0", "layer3.1.conv2"):
        assert known in names
    assert len(dom.find_all("script")) == 1
    # each measured peak memory says, in the page, what it counts (report.json's peak_memory)
    text = " ".join(dom.text().split())
    peaks = [f["measurement"] for f in report["findings"]
             if f["measurement"] and None not in f["measurement"]["peak_bytes"]]
    assert peaks and all(f"peak memory ({m['peak_memory']}):" in text for m in peaks)


def test_roofline_and_speedup_charts(small_cnn_run, small_cnn_dom):
    """The roofline has both roofs and one dot per layer, colored by its bound; the speedup chart has one point per
    measured finding; bars and table cells carry each layer's bound."""
    _, report, _ = small_cnn_run
    dom, _ = small_cnn_dom
    roofline = dom.by_id("roofline-chart")
    for roof in ("roof roof-memory", "roof roof-compute"):
        (line,) = roofline.find_all("line", class_=roof)
        assert float(line.attrs["x2"]) > float(line.attrs["x1"]), roof
    dots = roofline.find_all("circle", class_="layer-dot")
    assert len(dots) == len(report["layers"]) == 15
    names = sorted(layer["name"] for layer in report["layers"])
    assert sorted(d.find_all("title")[0].text().split(": ")[0] for d in dots) == names
    assert sorted(d.attrs["data-bound"] for d in dots) == sorted(layer["bound"] for layer in report["layers"])
    bars = dom.by_id("layer-chart").find_all("rect", class_="bar")
    assert [b.attrs["data-bound"] for b in bars] == [layer["bound"] for layer in report["layers"][:15]]
    headers = [th.text() for th in dom.by_id("layer-table").find_all("th")]
    assert "bound" in headers and "% of roofline" in headers
    measured = [f for f in report["findings"] if f["measurement"] is not None]
    assert measured, "small_cnn measured no finding"
    points = dom.by_id("speedup-chart").find_all("circle", class_="speedup-point")
    assert len(points) == len(measured)
    assert [p.find_all("title")[0].text().split(":")[0] for p in points] == \
        [f"{f['rule_id']} {f['rule']}" for f in measured]
    assert len(dom.by_id("speedup-chart").find_all("line", class_="unity")) == 1


def test_screenshots_for_a_person(small_cnn_run, tmp_path):
    """Full-width and phone-width screenshots of the small_cnn report in test-output/; they are real pictures."""
    out, _, _ = small_cnn_run
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, size, least_bytes in (("report-small_cnn.png", (1280, 2000), 60_000),
                                    ("report-small_cnn-narrow.png", (480, 1600), 30_000)):
        shot = OUTPUT / name
        shot.unlink(missing_ok=True)
        result = chromium(tmp_path / name, f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}",
                          "--hide-scrollbars", (out / "report.html").as_uri())
        assert result.returncode == 0, result.stderr[-3000:]
        assert console_lines(result.stderr) == []
        assert shot.is_file() and shot.stat().st_size > least_bytes, f"{shot}: {shot.stat().st_size} bytes"
        width, height, distinct = png_facts(shot)
        assert (width, height) == size
        assert distinct > 50, f"{shot} looks blank ({distinct} distinct byte values)"


def test_no_requests_no_errors_and_layout(small_cnn_run, devtools):
    """Over DevTools: the only request is the file itself, nothing is logged or thrown, and at 1280 px and 480 px
    the page does not overflow sideways and no chart label runs into its bar."""
    out, _, _ = small_cnn_run
    url = (out / "report.html").as_uri()
    devtools.open(url)
    devtools.drain(0.5)
    requests = [p["request"]["url"] for p in devtools.of("Network.requestWillBeSent")]
    assert requests == [url]
    assert page_problems(devtools) == []
    assert devtools.evaluate("document.scripts.length") == 1
    check_layout(devtools)


def test_layer_table_sorts_on_click(small_cnn_run, devtools):
    """Real clicks on the headers sort the rows: numbers largest first, text A to Z first, a second click reverses,
    and aria-sort marks the sorted column only."""
    out, report, _ = small_cnn_run
    devtools.open((out / "report.html").as_uri())

    def column(index: int, sort_value: bool = False) -> list:
        attribute = "c.dataset.sort" if sort_value else "c.textContent.trim()"
        return devtools.evaluate(f"Array.from(document.querySelectorAll('#layer-table tbody tr')).map(function (r) "
                                 f"{{ var c = r.cells[{index}]; return {attribute}; }})")

    def sorted_headers() -> dict:
        return devtools.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('#layer-table th'))"
                                 ".filter(function (t) { return t.hasAttribute('aria-sort'); })"
                                 ".map(function (t) { return [t.textContent, t.getAttribute('aria-sort')]; }))")

    names = [layer["name"] for layer in report["layers"]]
    natural = sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])
    as_written = column(0)
    assert [cell.split()[0] for cell in as_written] == names  # as written: slowest first
    assert sorted_headers() == {"time ms/step": "descending"}

    devtools.click("#layer-table th:nth-child(1)")
    assert [cell.split()[0] for cell in column(0)] == natural
    assert sorted_headers() == {"layer": "ascending"}
    devtools.click("#layer-table th:nth-child(1)")
    assert [cell.split()[0] for cell in column(0)] == natural[::-1]
    assert sorted_headers() == {"layer": "descending"}

    devtools.click("#layer-table th:nth-child(8)")  # time ms/step
    times = [float(v) for v in column(7, sort_value=True)]
    assert times == sorted(times, reverse=True) and len(times) == len(names)
    assert sorted_headers() == {"time ms/step": "descending"}
    devtools.click("#layer-table th:nth-child(8)")
    assert [float(v) for v in column(7, sort_value=True)] == sorted(times)

    devtools.click("#layer-table th:nth-child(10)")  # GFLOP/call
    flops = [float(v) for v in column(9, sort_value=True)]
    assert flops == sorted(flops, reverse=True)
    assert sorted(column(0)) == sorted(as_written)  # same rows, only reordered
    assert page_problems(devtools) == []


@pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)
def test_the_detectors_see_a_bad_page(tmp_path, devtools):
    """The checks above are not blind: a page with a remote image, console output, an uncaught error and an
    alert() is caught by the stderr log reader and by DevTools."""
    bad = tmp_path / "bad.html"
    page = ('<!DOCTYPE html><title>bad</title><img src="http://127.0.0.1:9/x.png">'
            '<script>console.error("boom"); ALERT notDefined();</script>')
    bad.write_text(page.replace("ALERT", ""))  # with flags only, an alert() would block the page for good
    result = chromium(tmp_path / "profile", "--dump-dom", bad.as_uri())
    logged = "\n".join(console_lines(result.stderr))
    assert "boom" in logged and "Uncaught" in logged
    bad.write_text(page.replace("ALERT", "alert(1);"))
    devtools.open(bad.as_uri())
    devtools.drain(0.5)
    assert "http://127.0.0.1:9/x.png" in [p["request"]["url"] for p in devtools.of("Network.requestWillBeSent")]
    problems = "\n".join(page_problems(devtools))
    assert "exception" in problems and "console.error" in problems and "dialog: alert" in problems


def test_hostile_module_names_are_text(hostile_run, tmp_path, devtools):
    """Module names holding markup and attribute breakouts survive a real profile, are escaped in report.html, and
    in Chromium they are plain text: the page keeps its one script, no element gains an on* attribute, nothing runs
    or pops up; a very long name does not widen the page."""
    report, files = hostile_run
    names = {HOSTILE_SCRIPT, HOSTILE_ATTRIBUTE, HOSTILE_SINGLE_QUOTE, HOSTILE_URL, LONG_NAME}
    assert {layer.name for layer in report.analysis.layers} == names
    text = files.html.read_text(encoding="utf-8")
    assert HOSTILE_SCRIPT not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert HOSTILE_ATTRIBUTE not in text and "x&#34; onerror=&#34;alert(1)" in text
    assert HOSTILE_SINGLE_QUOTE not in text and "y&#39; onerror=&#39;alert(2)" in text
    assert text.count("<script") == 1

    result = chromium(tmp_path / "profile", "--dump-dom", files.html.as_uri())
    assert result.returncode == 0, result.stderr[-3000:]
    assert console_lines(result.stderr) == []
    dom = parse_html(result.stdout)
    assert len(dom.find_all("script")) == 1
    assert [(e.tag, a) for e in dom.iter() for a in e.attrs if a.startswith("on")] == []
    assert [(e.tag, v) for e in dom.iter() for a, v in e.attrs.items()
            if a in URL_ATTRIBUTES and "javascript:" in (v or "")] == []
    rows = dom.by_id("layer-table").find_all("tbody")[0].find_all("tr")
    assert {row.find_all("code")[0].text() for row in rows} == names
    assert {title.text().rsplit(":", 1)[0] for title in dom.by_id("layer-chart").find_all("title")} == names
    assert {title.text().split(": ")[0] for title in dom.by_id("roofline-chart").find_all("title")} == names

    devtools.open(files.html.as_uri())
    devtools.drain(0.3)
    assert page_problems(devtools) == []
    assert devtools.evaluate("document.scripts.length") == 1
    assert devtools.evaluate("document.querySelectorAll('[onerror]').length") == 0
    check_layout(devtools)

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "report-hostile-names.png"
    result = chromium(tmp_path / "shot", f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars",
                      files.html.as_uri())
    assert result.returncode == 0 and shot.stat().st_size > 30_000
