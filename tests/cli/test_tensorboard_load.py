"""convdoctor's TensorBoard tab under load, in a real TensorBoard server: a 64-rank log dir, 57 concurrent requests.

The log dir holds eight runs of eight ranks, each rank a copy of one of six small real traces (tests/data), and a
run whose trace is truncated. Fifty requests for 24 traces of the eight runs (each asked for two or three times at
once), three for the broken run and four for runs or workers that do not exist are fired together from a thread
pool. Every page must be its own trace's report; each trace must be analyzed once (the server's log names each
analysis); the server's peak memory must stay within what one analysis and the pages it keeps take; nothing in the
log dir may change. The page cache's bounds are checked on the same real traces, analyzed by the plugin's loader.

TensorBoard runs without the PyTorch Profiler plugin here: it would parse all 65 traces in the background, in
the same process, and its memory is not the tab's to bound.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from html import escape, unescape
from pathlib import Path

import pytest
from conftest import DATA
from tensorboard_server import tensorboard

from convdoctor.tensorboard.cache import PageCache
from convdoctor.tensorboard.plugin import analyzed_page

pytestmark = pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)

PLUGIN = "/data/plugin/convdoctor"
SOURCES = [DATA / name for name in (
    "cpu_only_small.pt.trace.json.gz", "inference_excerpt_nosteps_rank1.json.gz",
    "alexnet_a100_nosteps_noshapes.json.gz", "alexnet_a100_cupti_range_nokernels.json.gz",
    "resnet50_a100_ddp_rank0_step5.json.gz",
    "resnet50_v100_pt18_array_step7.json.gz")]
RUNS, RANKS = 8, 8
ANALYZED = re.compile(r"^convdoctor: analyzed '(.*)' in [0-9.]+ s \(HTTP (\d+)\)$", re.MULTILINE)
HEADLINE = re.compile(r'id="headline">(.*?)</p>', re.DOTALL)
# Memory the load may take beyond one analysis and the pages kept: the 57 request threads' stacks and buffers, and
# the allocator's slack between analyses (glibc keeps up to 8 arenas per core): one run peaked 33 MiB over them.
# Analyses that ran all at once would add about 20 MiB each, the 24 traces asked for about 450 MiB.
THREAD_SLACK = 64 * 1024 * 1024


def source_of(run: int, rank: int) -> Path:
    return SOURCES[(run + rank) % len(SOURCES)]


def worker(rank: int) -> str:
    return f"rank{rank}.1700000000000"


def snapshot(logdir: Path) -> dict[str, tuple[int, int, bool]]:
    """Every file and folder under LOGDIR, hidden ones included: (mtime_ns, size, is a folder)."""
    entries = {}
    for folder, dirs, files in os.walk(logdir):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.stat()
            entries[str(path.relative_to(logdir))] = (stat.st_mtime_ns, stat.st_size, path.is_dir())
    return entries


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of process PID, in bytes, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> int:
    """Start PID's peak RSS anew from its RSS now (proc(5): clear_refs 5); that RSS, in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory(pid)["VmRSS"]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """Eight runs ``job0``..``job7`` of eight ranks, and ``broken`` (a truncated trace)."""
    root = tmp_path_factory.mktemp("logdir-64").resolve()
    for run in range(RUNS):
        (root / f"job{run}").mkdir()
        for rank in range(RANKS):
            shutil.copy(source_of(run, rank), root / f"job{run}" / f"{worker(rank)}.pt.trace.json.gz")
    (root / "broken").mkdir()
    (root / "broken" / f"{worker(0)}.pt.trace.json.gz").write_bytes(SOURCES[4].read_bytes()[:5000])
    return root


@pytest.fixture(scope="module")
def expected_headlines() -> dict[Path, str]:
    """Each source trace's report headline, analyzed in this process by the plugin's own loader."""
    return {source: unescape(HEADLINE.search(analyzed_page(source).body.decode()).group(1)) for source in SOURCES}


def test_fifty_concurrent_requests_on_a_64_rank_log_dir(logdir, expected_headlines, tmp_path):
    before = snapshot(logdir)
    wave = [(f"job{i % RUNS}", worker((i // RUNS) % 3)) for i in range(50)]
    asked = {(run, w) for run, w in wave}
    assert len(asked) == 24
    others = [("broken", worker(0))] * 3 + [("nope", worker(0)), ("job0", "rank9.1"), ("../job0", worker(0)),
                                            ("", worker(0))]
    warm_up = [("job1", worker(5)), ("job3", worker(7)), ("job5", worker(6))]  # cpu_only, the DDP rank, the pt18 trace
    assert [source_of(int(run[3:]), int(w[4])) for run, w in warm_up] == [SOURCES[0], SOURCES[4], SOURCES[5]]

    with tensorboard(logdir, tmp_path, without=("pytorch_profiler",)) as server:
        def report(run_worker: tuple[str, str]) -> tuple[int, bytes, dict[str, str]]:
            run, w = run_worker
            return server.get(PLUGIN + "/report", run=run, worker=w)

        assert server.json("/data/plugins_listing")["convdoctor"]["enabled"]
        assert report(warm_up[0])[0] == 200  # imports the pipeline, the rules and the templates
        pid = server.process.pid
        settled = reset_peak(pid)
        for run_worker in warm_up[1:]:  # the largest traces: one analysis's peak above the settled process
            assert report(run_worker)[0] == 200
        one_analysis = memory(pid)["VmHWM"] - settled
        start = reset_peak(pid)

        requests = wave + others
        barrier = threading.Barrier(len(requests))

        def together(run_worker: tuple[str, str]) -> tuple[int, bytes, dict[str, str]]:
            barrier.wait()
            return report(run_worker)

        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            answers = list(pool.map(together, requests))
        peak = memory(pid)["VmHWM"]
        with ThreadPoolExecutor(max_workers=8) as pool:  # again: every page is kept, nothing is analyzed anew
            again = list(pool.map(report, requests))
        log = server.log_text()

    for (run, w), (status, body, headers) in zip(wave, answers):
        assert status == 200, (run, w, body[:300])
        page = body.decode("utf-8")
        trace = logdir / run / f"{w}.pt.trace.json.gz"
        assert escape(str(trace)) in page  # its Traces section names this trace, and no other of the log dir
        assert not re.search(r"job\d/rank\d\.", page.replace(f"{run}/{w}.", "")), (run, w)
        assert unescape(HEADLINE.search(page).group(1)) == expected_headlines[source_of(int(run[3:]), int(w[4]))]
        policy = headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'none'") and "http" not in policy
        assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}'", policy) and headers["X-Content-Type-Options"]

    broken = answers[len(wave):len(wave) + 3]
    assert {status for status, _, _ in broken} == {422}
    assert all(b"convdoctor could not analyze this trace" in body and b"Traceback" not in body for _, body, _ in broken)
    assert [status for status, _, _ in answers[len(wave) + 3:]] == [404] * 4
    assert [(status, body) for status, body, _ in again] == [(status, body) for status, body, _ in answers]

    analyzed = [(Path(path), int(status)) for path, status in ANALYZED.findall(log)]
    expected = {(logdir / run / f"{w}.pt.trace.json.gz", 200) for run, w in asked | set(warm_up)}
    expected.add((logdir / "broken" / f"{worker(0)}.pt.trace.json.gz", 422))
    assert sorted(analyzed) == sorted(expected)  # each trace once, though asked for up to three times at once
    assert "Traceback" not in log

    kept = sum(len(body) for status, body, _ in dict(zip(requests, answers)).values() if status != 404)
    assert peak <= start + one_analysis + kept + THREAD_SLACK, (
        f"peak RSS {peak >> 20} MiB > {start >> 20} MiB + one analysis {one_analysis >> 20} MiB + pages "
        f"{kept >> 20} MiB + {THREAD_SLACK >> 20} MiB")
    assert snapshot(logdir) == before


# ------------------------------------------------------------------------------------------ the page cache


class CountingLoad:
    """The plugin's real loader, counting the traces it loads."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def __call__(self, trace: Path):
        self.loaded.append(trace)
        return analyzed_page(trace)


def test_the_cache_evicts_the_least_recently_served_page_beyond_its_count(logdir):
    a, b, c = (logdir / "job0" / f"{worker(rank)}.pt.trace.json.gz" for rank in range(3))
    load = CountingLoad()
    cache = PageCache(load, max_pages=2)
    first = cache.get(a)
    cache.get(b)
    assert cache.get(a) == first and load.loaded == [a, b]
    cache.get(c)  # b is the least recently served
    assert len(cache) == 2 and cache.kept_bytes == len(first.body) + len(cache.get(c).body)
    assert load.loaded == [a, b, c]
    assert cache.get(a) == first and load.loaded == [a, b, c]
    cache.get(b)
    assert load.loaded == [a, b, c, b]


def test_the_cache_keeps_within_its_bytes(logdir):
    a, b = (logdir / "job1" / f"{worker(rank)}.pt.trace.json.gz" for rank in range(2))
    sizes = {trace: len(analyzed_page(trace).body) for trace in (a, b)}
    load = CountingLoad()
    cache = PageCache(load, max_bytes=sum(sizes.values()) - 1)
    cache.get(a), cache.get(b)
    assert len(cache) == 1 and cache.kept_bytes == sizes[b]
    cache.get(a)
    assert load.loaded == [a, b, a] and cache.kept_bytes == sizes[a]

    too_small = PageCache(load := CountingLoad(), max_bytes=min(sizes.values()) - 1)
    assert too_small.get(a).status == 200 and too_small.get(a).status == 200  # served, never kept
    assert load.loaded == [a, a] and len(too_small) == 0 and too_small.kept_bytes == 0


def test_concurrent_gets_of_one_trace_share_one_analysis(logdir):
    trace = logdir / "job2" / f"{worker(2)}.pt.trace.json.gz"
    load = CountingLoad()
    cache = PageCache(load)
    barrier = threading.Barrier(8)

    def get(_: int):
        barrier.wait()
        return cache.get(trace)

    with ThreadPoolExecutor(max_workers=8) as pool:
        pages = list(pool.map(get, range(8)))
    assert load.loaded == [trace] and len(set(pages)) == 1 and pages[0].status == 200


def test_a_failed_analysis_is_kept_and_does_not_touch_other_pages(logdir):
    broken, good = (logdir / run / f"{worker(0)}.pt.trace.json.gz" for run in ("broken", "job3"))
    load = CountingLoad()
    cache = PageCache(load)
    page = cache.get(good)
    problem = cache.get(broken)
    assert problem.status == 422 and b"truncated" in problem.body and b"Traceback" not in problem.body
    assert cache.get(broken) is problem and cache.get(good) is page and load.loaded == [good, broken]
