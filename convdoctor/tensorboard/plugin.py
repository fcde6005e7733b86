"""convdoctor's TensorBoard tab: the runs of the log dir, and each run's report, served offline.

A run is a folder of the log dir that holds Kineto traces (``*.pt.trace.json[.gz]``, one per worker), named by its
path relative to the log dir as the PyTorch Profiler plugin names it. The report shown for a worker's trace is

1. the report `convdoctor profile` wrote for it, with its measured speedups: ``<out>/report.html`` for a trace in
   ``<out>/tb/<run>/``, when ``<out>/report.json`` lists that trace;
2. otherwise the trace analyzed on demand as `convdoctor analyze` would (nothing measured): each version of a trace
   once, one analysis at a time, the pages kept in a bounded LRU cache (cache.py: 128 pages, 64 MiB). Each analysis
   writes one line to stderr (the server's log). Nothing is written into the log dir.

Routes, under ``/data/plugin/convdoctor``: ``/index.js`` (the tab: a run selector and the report in a frame),
``/runs`` (JSON: ``[{"run": ..., "workers": [...]}]``) and ``/report?run=RUN&worker=WORKER`` (the report page, with a
Content-Security-Policy that lets it load nothing from anywhere). Only runs and workers the plugin lists are served;
others get a 404, and a trace that cannot be analyzed a one-line page (422), which no other trace's page depends on.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

import werkzeug
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from convdoctor.analyzer.trace.reader import find_traces
from convdoctor.errors import ConvDoctorError, TraceError
from convdoctor.tensorboard.cache import Page, PageCache

PLUGIN_NAME = "convdoctor"
TAB_SCRIPT = Path(__file__).with_name("static") / "tensorboard_tab.js"
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@dataclass(frozen=True)
class Run:
    """A folder of the log dir with traces: its name and each worker's trace."""

    name: str
    traces: dict[str, Path]  # worker -> trace file


def find_runs(logdir: Path) -> dict[str, Run]:
    """The runs under the log dir LOGDIR by name, sorted; hidden folders (a capture in progress) are skipped."""
    try:
        traces = find_traces(logdir)
    except TraceError:  # no traces (yet)
        return {}
    by_dir: dict[Path, dict[str, Path]] = {}
    for trace in traces:
        by_dir.setdefault(trace.parent, {})[worker_name(trace)] = trace
    return {run.name: run for run in (Run(_run_name(logdir, folder), traces) for folder, traces in by_dir.items())}


def worker_name(trace: Path) -> str:
    """``worker0.1700000000000`` for ``worker0.1700000000000.pt.trace.json.gz``."""
    return trace.name.split(".pt.trace")[0]


def _run_name(logdir: Path, folder: Path) -> str:
    return folder.name if folder == logdir else folder.relative_to(logdir).as_posix()


def profile_report(trace: Path) -> Path | None:
    """The report.html `convdoctor profile` wrote for TRACE (``<out>/tb/<run>/TRACE`` -> ``<out>/report.html``),
    or None when there is none or its report.json lists other traces."""
    out = trace.parent.parent.parent
    try:
        data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    files = data.get("trace_files") if isinstance(data, dict) else None
    listed = {Path(f).name for f in files if isinstance(f, str)} if isinstance(files, list) else set()
    html = out / "report.html"
    return html if trace.name in listed and html.is_file() else None


class ConvDoctorPlugin(base_plugin.TBPlugin):
    """The "convdoctor" tab of TensorBoard."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        super().__init__(context)
        self.logdir = Path(context.logdir).resolve() if context.logdir else None
        self.pages = PageCache(analyzed_page)

    def get_plugin_apps(self) -> dict[str, object]:
        return {"/index.js": self._tab_script, "/runs": self._runs, "/report": self._report}

    def is_active(self) -> bool:
        return bool(self._find_runs())

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", disable_reload=True, tab_name=PLUGIN_NAME)

    def _find_runs(self) -> dict[str, Run]:
        return find_runs(self.logdir) if self.logdir is not None and self.logdir.is_dir() else {}

    @wrappers.Request.application
    def _tab_script(self, request: werkzeug.Request) -> werkzeug.Response:
        return _respond(TAB_SCRIPT.read_bytes(), "text/javascript; charset=utf-8")

    @wrappers.Request.application
    def _runs(self, request: werkzeug.Request) -> werkzeug.Response:
        runs = [{"run": run.name, "workers": list(run.traces)} for run in self._find_runs().values()]
        return _respond(json.dumps(runs), "application/json")

    @wrappers.Request.application
    def _report(self, request: werkzeug.Request) -> werkzeug.Response:
        run = self._find_runs().get(request.args.get("run", ""))
        if run is None:
            return _respond("no such run in this log dir", "text/plain; charset=utf-8", status=404)
        worker = request.args.get("worker") or next(iter(run.traces))
        trace = run.traces.get(worker)
        if trace is None:
            return _respond(f"run {run.name!r} has no such worker", "text/plain; charset=utf-8", status=404)
        written = profile_report(trace)
        if written is not None:
            return _serve(_page(written.read_text(encoding="utf-8")))
        try:
            return _serve(self.pages.get(trace))
        except OSError as exc:  # the trace went away (or became unreadable) since the listing
            return _respond(f"run {run.name!r}: its trace cannot be read ({exc.strerror})", "text/plain; charset=utf-8",
                            status=404)


def analyzed_page(trace: Path) -> Page:
    """TRACE analyzed as `convdoctor analyze` would, as a page: its report, or (422) why there is none. One line on
    stderr says which trace was analyzed and how long it took.

    The analysis's reference cycles (a Profile's parent/child links) are collected before it returns: in this
    long-lived server they would otherwise wait for a full collection, each analysis's adding about as much memory
    as the analysis took."""
    from convdoctor.pipeline import analyze_trace
    from convdoctor.reports.html_report import render_html

    start = time.monotonic()
    try:
        page = _page(render_html(analyze_trace(trace)))
    except ConvDoctorError as exc:
        page = _page(_problem_page(trace.parent.name, worker_name(trace), str(exc)), status=422)
    gc.collect()
    print(f"convdoctor: analyzed {str(trace)!r} in {time.monotonic() - start:.2f} s (HTTP {page.status})",
          file=sys.stderr, flush=True)
    return page


def _problem_page(run: str, worker: str, problem: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><meta charset=\"utf-8\"><title>convdoctor: {escape(run)}</title>"
            f"<body style=\"font-family: system-ui, sans-serif; margin: 2rem\"><h1>No report for {escape(run)} "
            f"({escape(worker)})</h1><p>convdoctor could not analyze this trace: {escape(problem)}</p></body></html>")


def _page(html: str, status: int = 200) -> Page:
    """A report page that may run its own inline scripts and styles, and load nothing: no request leaves it."""
    scripts = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                       for s in INLINE_SCRIPT.findall(html))
    policy = ("default-src 'none'; " + (f"script-src {scripts}; " if scripts else "")
              + "style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'self'")
    return Page(html.encode("utf-8"), status, policy)


def _serve(page: Page) -> werkzeug.Response:
    return _respond(page.body, "text/html; charset=utf-8", page.status, [("Content-Security-Policy", page.policy)])


def _respond(body: str | bytes, content_type: str, status: int = 200,
             headers: list[tuple[str, str]] | None = None) -> werkzeug.Response:
    return werkzeug.Response(body, status=status, content_type=content_type,
                             headers=[("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache"),
                                      *(headers or [])])
