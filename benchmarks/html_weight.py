"""Weight of report.html and the time real headless Chromium takes to open it and to sort a table, for 1x and 10x
the V100 ResNet-50 trace (75,718 and 757,180 events).

    nice -n 19 python benchmarks/html_weight.py                 # 1x and 10x, 5 opens each
    python benchmarks/html_weight.py --factors 10 --opens 3

The standard ("The views people lost"): a 757k-event trace's report stays usable, its HTML opens in Chromium in
under 3 s and weighs under 15 MB (10^6 bytes). The traces are built as in ``trace_memory.py``; each runs through
``python -m convdoctor analyze TRACE --out DIR`` in a fresh process. report.html is then opened ``--opens`` times,
each in a fresh headless Chromium (``tests/browser.py``'s ``DevTools``, a new profile each time), and the page's own
navigation timing is read (``domContentLoadedEventEnd`` and ``loadEventEnd``, ms from navigation start); the table
gives medians. In each open one click sorts the operators table (``#operators-by-name``) by its text column and
one the conv layer table (``#layer-table``): the time its handler runs (the sort), and the time from ``click()``
to the second animation frame after it, so that style, layout and paint of the sorted rows are counted. The
page's bytes per section (split at its ``<h2>`` headings, ``<style>`` and ``<script>`` apart) are printed to show
what weighs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trace_memory import REPO, build_trace, mem_total_gib, run_measured, v100_trace

sys.path.insert(0, str(REPO / "tests"))
from browser import CHROMIUM, DevTools, page_problems  # noqa: E402

LIMIT_MB = 15.0
LIMIT_OPEN_MS = 3000.0
NAVIGATION = ("(function () { var n = performance.getEntriesByType('navigation')[0];"
              " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; })()")
# One click on a sortable header; resolves with the ms its handler ran (the sort) and the ms to the second animation
# frame after it (style, layout and paint of the sorted rows included).
CLICK = """new Promise(function (resolve) {
  var target = document.querySelector(%s), th = target.closest('th'), before = th.getAttribute('aria-sort');
  var start = performance.now();
  target.click();
  var script = performance.now() - start;
  requestAnimationFrame(function () { requestAnimationFrame(function () {
    resolve({script: script, ms: performance.now() - start, sorted: th.getAttribute('aria-sort') !== before,
             rows: th.closest('table').tBodies[0].rows.length});
  }); });
})"""
CLICKS = {"operators": "#operators-by-name th:nth-child(1) button", "layers": "#layer-table th:nth-child(1)"}


@dataclass
class Result:
    factor: int
    events: int
    analyze_s: float
    html_mb: float
    json_mb: float
    dcl_ms: list[float]
    load_ms: list[float]
    click_ms: dict[str, list[float]]
    script_ms: dict[str, list[float]]
    rows: dict[str, int]
    problems: list[str]


def open_page(html: Path, profile: Path) -> tuple[dict[str, float], dict[str, dict], list[str]]:
    """One fresh Chromium: open ``html``, read its navigation timing, time one click per table."""
    browser = DevTools(profile)
    try:
        browser.open(html.as_uri())
        timing = browser.evaluate(NAVIGATION)
        clicks = {name: browser.evaluate(CLICK % json.dumps(selector)) for name, selector in CLICKS.items()}
        return timing, clicks, page_problems(browser)
    finally:
        browser.close()


def sections(html: str) -> list[tuple[str, int]]:
    """Bytes (UTF-8) of the page's style, script, and each part that starts at an <h2> heading."""
    style = sum(len(m.group().encode()) for m in re.finditer(r"<style>.*?</style>", html, re.S))
    script = sum(len(m.group().encode()) for m in re.finditer(r"<script>.*?</script>", html, re.S))
    body = re.sub(r"<style>.*?</style>|<script>.*?</script>", "", html, flags=re.S)
    starts = [(0, "(head, title, headline)")] + [(m.start(), m.group(1) or m.group(2).strip())
                                                 for m in re.finditer(r'<h2(?: id="([^"]*)")?>(.*?)</h2>', body)]
    parts = [(name, len(body[start:end].encode()))
             for (start, name), (end, _) in zip(starts, starts[1:] + [(len(body), "")])]
    return [("<style>", style), ("<script>", script), *parts]


def measure(factors: list[int], opens: int) -> list[Result]:
    data = v100_trace()
    results = []
    with tempfile.TemporaryDirectory(prefix="convdoctor-html-weight-") as scratch:
        for factor in factors:
            trace, out = Path(scratch) / f"v100x{factor}.pt.trace.json.gz", Path(scratch) / f"out{factor}"
            events, _ = build_trace(data, factor, trace)
            _, wall, rc = run_measured([sys.executable, "-m", "convdoctor", "analyze", str(trace), "--out", str(out)])
            trace.unlink()
            if rc != 0:
                sys.exit(f"{factor}x: analyze failed (exit {rc})")
            html = out / "report.html"
            print(f"{factor}x: {events:,} events, analyze {wall:.1f} s; report.html bytes by section:", flush=True)
            for name, size in sections(html.read_text(encoding="utf-8")):
                print(f"  {size:>12,}  {name}")
            dcl, load, problems = [], [], []
            click_ms: dict[str, list[float]] = {name: [] for name in CLICKS}
            script_ms: dict[str, list[float]] = {name: [] for name in CLICKS}
            rows: dict[str, int] = {}
            for i in range(opens):
                timing, clicks, seen = open_page(html, Path(scratch) / f"profile{factor}-{i}")
                dcl.append(timing["dcl"])
                load.append(timing["load"])
                problems += seen
                for name, click in clicks.items():
                    if not click["sorted"]:
                        problems.append(f"a click on {CLICKS[name]} did not sort")
                    click_ms[name].append(click["ms"])
                    script_ms[name].append(click["script"])
                    rows[name] = click["rows"]
                spent = ", ".join(f"{n} click {c['script']:.0f} / {c['ms']:.0f} ms" for n, c in clicks.items())
                print(f"  open {i + 1}: DOMContentLoaded {timing['dcl']:.0f} ms, load {timing['load']:.0f} ms, {spent}",
                      flush=True)
            results.append(Result(factor, events, wall, html.stat().st_size / 1e6,
                                  (out / "report.json").stat().st_size / 1e6, dcl, load, click_ms, script_ms, rows,
                                  problems))
    return results


def table(results: list[Result]) -> str:
    lines = ["| trace | events | analyze s | report.html MB | report.json MB | opens | DOMContentLoaded ms "
             "(median, min-max) | load ms (median, min-max) | operators click ms: sort / frame (rows) | "
             "layers click ms: sort / frame (rows) | < 15 MB | opens < 3 s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        clicks = " | ".join(f"{statistics.median(r.script_ms[n]):.0f} / {statistics.median(r.click_ms[n]):.0f} "
                            f"({r.rows[n]})" for n in CLICKS)
        lines.append(
            f"| {r.factor}x | {r.events:,} | {r.analyze_s:.1f} | {r.html_mb:.3f} | {r.json_mb:.2f} | {len(r.load_ms)} "
            f"| {statistics.median(r.dcl_ms):.0f} ({min(r.dcl_ms):.0f}-{max(r.dcl_ms):.0f}) "
            f"| {statistics.median(r.load_ms):.0f} ({min(r.load_ms):.0f}-{max(r.load_ms):.0f}) | {clicks} "
            f"| {'yes' if r.html_mb < LIMIT_MB else 'NO'} "
            f"| {'yes' if statistics.median(r.load_ms) < LIMIT_OPEN_MS else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--opens", type=int, default=5, help="fresh Chromium opens per report [default: 5]")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("no `chromium` on PATH")
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {mem_total_gib():.0f} GiB RAM, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}; {chromium}; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    results = measure(args.factors, args.opens)
    print(f"load average at end {os.getloadavg()[0]:.2f}\n\n{table(results)}")
    for r in results:
        for problem in sorted(set(r.problems)):
            print(f"{r.factor}x page problem: {problem}")


if __name__ == "__main__":
    main()
