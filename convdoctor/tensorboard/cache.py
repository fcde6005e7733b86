"""The tab's analyzed report pages: each version of a trace analyzed once, kept in a bounded LRU cache.

A page is kept per trace file and served while the file's version (mtime, size) is the one analyzed; a changed
trace is analyzed anew. A request for a trace whose analysis is under way waits for that analysis instead of
starting another, and one analysis runs at a time: under the GIL a second one in parallel would finish no sooner
and would double the memory at the peak. Requests for kept pages are served meanwhile.

The bound: at most ``max_pages`` pages holding at most ``max_bytes`` bytes of page, the least recently served
evicted first; a page larger than ``max_bytes`` by itself is served and not kept. The process's memory for the
tab is thus the cache's bytes plus one analysis at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_PAGES = 128
MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Page:
    """A report page as served: its bytes, HTTP status and Content-Security-Policy."""

    body: bytes
    status: int
    policy: str


Version = tuple[int, int]  # (st_mtime_ns, st_size) of the trace file


class _Pending:
    """One analysis under way, that requests for the same trace version wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.page: Page | None = None
        self.error: BaseException | None = None

    def wait(self) -> Page:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.page is not None
        return self.page


class PageCache:
    """Pages made by LOAD (a trace -> its page), each trace version loaded once, kept within the bounds."""

    def __init__(self, load: Callable[[Path], Page], max_pages: int = MAX_PAGES, max_bytes: int = MAX_BYTES) -> None:
        self._load = load
        self.max_pages, self.max_bytes = max_pages, max_bytes
        self._pages: OrderedDict[Path, tuple[Version, Page]] = OrderedDict()
        self._pending: dict[tuple[Path, Version], _Pending] = {}
        self._lock = threading.Lock()  # guards the two dicts and kept_bytes
        self._analysis = threading.Lock()  # one load at a time
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, trace: Path) -> Page:
        """TRACE's page: kept, awaited from the analysis under way, or loaded now. Raises OSError when TRACE
        cannot be read, and whatever LOAD raises (to every request that waited for it; nothing is kept)."""
        stat = trace.stat()
        key = (trace, (stat.st_mtime_ns, stat.st_size))
        with self._lock:
            kept = self._pages.get(trace)
            if kept is not None and kept[0] == key[1]:
                self._pages.move_to_end(trace)
                return kept[1]
            pending = self._pending.get(key)
            if pending is not None:
                waiting = True
            else:
                waiting, pending = False, self._pending.setdefault(key, _Pending())
        if waiting:
            return pending.wait()
        try:
            with self._analysis:
                pending.page = self._load(trace)
        except BaseException as error:
            pending.error = error
            raise
        else:
            with self._lock:
                self._keep(trace, key[1], pending.page)
            return pending.page
        finally:
            with self._lock:
                del self._pending[key]
            pending.done.set()

    def _keep(self, trace: Path, version: Version, page: Page) -> None:
        old = self._pages.pop(trace, None)
        if old is not None:
            self.kept_bytes -= len(old[1].body)
        if len(page.body) > self.max_bytes:
            return
        self._pages[trace] = (version, page)
        self.kept_bytes += len(page.body)
        while len(self._pages) > self.max_pages or self.kept_bytes > self.max_bytes:
            _, (_, evicted) = self._pages.popitem(last=False)
            self.kept_bytes -= len(evicted.body)
