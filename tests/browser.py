"""A real headless Chromium for tests, driven with the standard library only.

* ``chromium()``: one run with command-line flags (``--dump-dom``, ``--screenshot``, ``--enable-logging=stderr``);
* ``DevTools``: the DevTools protocol over ``--remote-debugging-pipe`` (NUL-separated JSON on file descriptors 3
  and 4), for network requests, exceptions, dialogs and clicks;
* ``parse_html`` and ``png_facts`` to read what it produced.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--mute-audio"]
CONSOLE_LINE = re.compile(r"CONSOLE[:(]")  # Chromium's log line for a console message or an uncaught error


def chromium(user_data_dir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run Chromium once with HEADLESS flags, a fresh profile and ARGS; stderr carries its log."""
    return subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={user_data_dir}", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, errors="replace", timeout=timeout)


def console_lines(stderr: str) -> list[str]:
    """Console messages and uncaught errors from Chromium's stderr log."""
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line) or "Uncaught" in line]


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list["Element"] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)  # text and child elements in document order

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text() for p in self.parts)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list["Element"]:
        return [e for e in self.iter() if (tag is None or e.tag == tag)
                and all(e.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def by_id(self, id_: str) -> "Element":
        found = self.find_all(id=id_)
        assert len(found) == 1, f"{len(found)} elements with id={id_!r}"
        return found[0]


class _TreeBuilder(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        self.stack[-1].parts.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


def parse_html(text: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def png_facts(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the decoded scanlines (1-3 means blank)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, offset = b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            idat += data[offset + 8:offset + 8 + length]
        offset += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


class DevTools:
    """A headless Chromium and one page in it, spoken to over --remote-debugging-pipe."""

    def __init__(self, user_data_dir: Path, width: int = 1280, height: int = 900) -> None:
        browser_reads, self._write = os.pipe()
        self._read, browser_writes = os.pipe()
        # Park the browser's ends above the low numbers, so that moving them to 3 and 4 cannot clobber each other.
        high_read = fcntl.fcntl(browser_reads, fcntl.F_DUPFD_CLOEXEC, 10)
        high_write = fcntl.fcntl(browser_writes, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(browser_reads)
        os.close(browser_writes)

        def wire_pipe() -> None:  # in the child, before exec: the protocol lives on fds 3 (in) and 4 (out)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *HEADLESS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire_pipe, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(high_read)
        os.close(high_write)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self.width, self.height = width, height

    # -- protocol
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        decoded = json.loads(message)
        if decoded.get("method") == "Page.javascriptDialogOpening":  # an alert() would block the page: dismiss it
            self._send("Page.handleJavaScriptDialog", {"accept": True}, decoded.get("sessionId"))
        return decoded

    def call(self, method: str, params: dict | None = None, *, page: bool = True, timeout: float = 20) -> dict:
        sent = self._send(method, params, self.session if page else None)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message is None:
                raise TimeoutError(f"no answer to {method} in {timeout} s")
            if message.get("id") == sent:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float = 20) -> dict:
        for event in self.events:
            if event["method"] == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message is None:
                raise TimeoutError(f"no {method} in {timeout} s")
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message

    def drain(self, seconds: float) -> None:
        """Collect events for a while (late requests, errors from timers)."""
        deadline = time.monotonic() + seconds
        while (message := self._receive(deadline)) is not None:
            if "method" in message:
                self.events.append(message)

    def of(self, method: str) -> list[dict]:
        return [event["params"] for event in self.events if event["method"] == method]

    # -- page
    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 page=False)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        self.resize(self.width, self.height)
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def resize(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click in the middle of the element, through the input pipeline."""
        box = self.evaluate(f"(function () {{ var e = document.querySelector({json.dumps(selector)});"
                            "e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect();"
                            "return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"], "button": "left",
                                                   "clickCount": 1})

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            os.close(self._write)
            os.close(self._read)


def page_problems(browser: DevTools) -> list[str]:
    """Everything a clean page must not produce: exceptions, console output, error log entries, dialogs."""
    problems = [f"exception: {p['exceptionDetails'].get('exception', {}).get('description') or p['exceptionDetails']}"
                for p in browser.of("Runtime.exceptionThrown")]
    problems += [f"console.{p['type']}: {[a.get('value') for a in p['args']]}"
                 for p in browser.of("Runtime.consoleAPICalled")]
    problems += [f"log {p['entry']['level']}: {p['entry']['text']}" for p in browser.of("Log.entryAdded")
                 if p["entry"]["level"] in ("error", "warning")]
    problems += [f"dialog: {p['type']} {p['message']!r}" for p in browser.of("Page.javascriptDialogOpening")]
    return problems


LAYOUT_PROBLEMS = """(function () {
  var problems = [];
  var page = document.documentElement;
  if (page.scrollWidth > window.innerWidth) {
    problems.push('page is ' + page.scrollWidth + ' px wide in a ' + window.innerWidth + ' px window');
  }
  var clip = document.querySelector('#layer-label-clip rect');
  var clipRight = clip ? clip.x.baseVal.value + clip.width.baseVal.value : Infinity;
  document.querySelectorAll('#layer-chart g').forEach(function (g) {
    var label = g.querySelector('text'), bar = g.querySelector('rect.bar'), value = g.querySelectorAll('text')[1];
    var right = label.getBBox().x + label.getBBox().width;
    if (label.getAttribute('clip-path') === 'url(#layer-label-clip)') { right = Math.min(right, clipRight); }
    if (right > bar.x.baseVal.value) { problems.push('label "' + label.textContent + '" runs into its bar'); }
    var end = value.getBBox().x + value.getBBox().width;
    if (end > 1000) { problems.push('value "' + value.textContent + '" ends at ' + end + ', outside the chart'); }
  });
  ['roofline-chart', 'speedup-chart'].forEach(function (id) {  // every mark inside its chart's drawing area
    var chart = document.getElementById(id);
    if (!chart) { return; }
    var box = chart.viewBox.baseVal;
    chart.querySelectorAll('text, circle, line').forEach(function (mark) {
      var b = mark.getBBox(), right = b.x + b.width;
      if (mark.getAttribute('transform')) { return; }  // the rotated axis title: its box is in its own frame
      var clip = mark.getAttribute('clip-path') && document.querySelector(
        mark.getAttribute('clip-path').slice(4, -1) + ' rect');
      if (clip) { right = Math.min(right, clip.x.baseVal.value + clip.width.baseVal.value); }
      if (b.x < box.x - 0.5 || right > box.x + box.width + 0.5 || b.y < box.y - 0.5 ||
          b.y + b.height > box.y + box.height + 0.5) {
        problems.push(id + ': "' + (mark.textContent || mark.tagName).slice(0, 40) + '" is outside the chart');
      }
    });
  });
  var table = document.getElementById('layer-table');
  if (table.parentElement.scrollWidth > table.parentElement.clientWidth + 1 && window.innerWidth >= 1200) {
    problems.push('layer table is ' + table.scrollWidth + ' px wide in ' + table.parentElement.clientWidth + ' px');
  }
  return problems;
})()"""


def check_layout(browser: DevTools, widths: tuple[int, ...] = (1280, 480)) -> None:
    for width in widths:
        browser.resize(width, 900)
        assert browser.evaluate(LAYOUT_PROBLEMS) == [], f"at {width} px"
    browser.resize(browser.width, browser.height)
