"""Wall time and peak RSS of `convdoctor analyze` against a bare `json.load` and two trace analyzers.

    python benchmarks/analyze_speed.py                      # 1x (median of 5) and 10x (median of 3)
    python benchmarks/analyze_speed.py --factors 1 --repeats 3
    python benchmarks/analyze_speed.py --quiet-load 1.0     # first wait (up to 5 min) for a 1-min load below 1.0

The traces are the real V100 ResNet-50 training trace and its 10x copy (757k events), built as in
``trace_memory.py``. Every run is a fresh process, so each pays its own interpreter start and imports, and its
peak RSS (from ``os.wait4``) is its own. The tools, on the same gzipped trace:

- ``json.load``: the standard library decoding the file, nothing else;
- ``convdoctor analyze TRACE --format json``: the whole command, reports written;
- Holistic Trace Analysis 0.5.0: ``TraceAnalysis(trace_dir=...)`` and ``get_gpu_kernel_breakdown()``, from its own
  virtual environment (``benchmarks/.peers/hta``, made with ``--install-peers``; skipped with a message without it);
- torch-tb-profiler 0.4.3 (a convdoctor dependency): ``RunLoader(...).load()``, the loader TensorBoard runs.

Every tool runs from compiled bytecode: pip compiles the packages it installs, and convdoctor's own modules are
compiled here first (an editable install in a shell with ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile
them from source in every run: ``python -X importtime`` shows ``convdoctor.pipeline`` and what it imports taking
0.15 s from source and 0.11 s from bytecode).
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from trace_memory import V100, build_trace, mem_total_gib, run_measured

PEERS = Path(__file__).resolve().parent / ".peers"
HTA_PYTHON = PEERS / "hta" / "bin" / "python"
HTA_VERSION = "0.5.0"
JSON_LOAD = "import gzip, json, sys; json.load(gzip.open(sys.argv[1], 'rt', encoding='utf-8'))"
HTA_RUN = (
    "import sys\n"
    "from hta.trace_analysis import TraceAnalysis\n"
    "TraceAnalysis(trace_dir=sys.argv[1]).get_gpu_kernel_breakdown(visualize=False)\n"
)
TB_RUN = (
    "import sys\n"
    "from torch_tb_profiler.io import Cache\n"
    "from torch_tb_profiler.profiler.loader import RunLoader\n"
    "run = RunLoader('bench', sys.argv[1], Cache()).load()\n"
    "sys.exit(0 if any(p is not None for p in run.profiles.values()) else 'torch-tb-profiler loaded no profile')\n"
)


@dataclass
class Timing:
    tool: str
    factor: int
    walls: list[float]
    peak_rss_mib: float

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def commands(trace: Path, out: Path) -> dict[str, list[str] | None]:
    """The command of each tool for one trace (alone in its folder); None for a tool that is not installed."""
    folder = str(trace.parent)
    return {
        "json.load": [sys.executable, "-c", JSON_LOAD, str(trace)],
        "convdoctor analyze": [sys.executable, "-m", "convdoctor", "analyze", str(trace), "--out", str(out),
                               "--format", "json"],
        f"HTA {HTA_VERSION}": [str(HTA_PYTHON), "-c", HTA_RUN, folder] if HTA_PYTHON.exists() else None,
        f"torch-tb-profiler {version('torch-tb-profiler')}": [sys.executable, "-c", TB_RUN, folder],
    }


def install_peers() -> None:
    """Make the HTA virtual environment (benchmarks/.peers/hta, git-ignored)."""
    subprocess.run([sys.executable, "-m", "venv", str(PEERS / "hta")], check=True)
    subprocess.run([str(HTA_PYTHON), "-m", "pip", "install", "-q", f"HolisticTraceAnalysis=={HTA_VERSION}"],
                   check=True)


def compile_convdoctor() -> None:
    """Compile convdoctor's modules to bytecode, as pip does for an installed package."""
    import convdoctor.analyzer
    import convdoctor.reports
    import convdoctor.rules

    for package in (convdoctor, convdoctor.analyzer, convdoctor.reports, convdoctor.rules):
        for folder in package.__path__:
            compileall.compile_dir(folder, quiet=1, maxlevels=0)


def wait_for_quiet(threshold: float, patience_s: float = 300.0) -> None:
    """Wait until the 1-minute load average is below ``threshold``, at most ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(10)


def measure(factors: list[int], repeats: dict[int, int]) -> list[Timing]:
    data = json.loads(gzip.decompress(V100.read_bytes()))
    timings = []
    with tempfile.TemporaryDirectory(prefix="convdoctor-analyze-speed-") as scratch:
        for factor in factors:
            folder = Path(scratch) / f"x{factor}"
            folder.mkdir()
            trace = folder / "worker0.pt.trace.json.gz"  # a name every tool takes for a trace
            events, raw_bytes = build_trace(data, factor, trace)
            print(f"{factor}x: {events:,} events, {raw_bytes / 2**20:.0f} MiB of JSON", flush=True)
            for tool, command in commands(trace, Path(scratch) / f"out{factor}").items():
                if command is None:
                    print(f"  {tool}: skipped, not installed (run with --install-peers)", flush=True)
                    continue
                walls, peak = [], 0.0
                for _ in range(repeats[factor]):
                    rss, wall, rc = run_measured(command)
                    if rc != 0:
                        print(f"  {tool}: failed (exit {rc}), left out", flush=True)
                        break
                    walls.append(wall)
                    peak = max(peak, rss)
                else:
                    timings.append(Timing(tool, factor, walls, peak))
                    print(f"  {tool}: {' '.join(f'{w:.2f}' for w in walls)} s, peak RSS {peak:,.0f} MiB", flush=True)
            trace.unlink()
    return timings


def table(timings: list[Timing]) -> str:
    ours = {t.factor: t.median for t in timings if t.tool == "convdoctor analyze"}
    lines = ["| trace | tool | runs | median wall s | min-max s | peak RSS MiB | tool / convdoctor |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for t in timings:
        ratio = f"{t.median / ours[t.factor]:.2f}x" if t.factor in ours else "-"
        lines.append(f"| {t.factor}x | {t.tool} | {len(t.walls)} | {t.median:.2f} | {min(t.walls):.2f}-"
                     f"{max(t.walls):.2f} | {t.peak_rss_mib:,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, help="runs per tool and trace [default: 5 at 1x, 3 above]")
    parser.add_argument("--quiet-load", type=float, metavar="LOAD",
                        help="first wait (up to 5 minutes) for the 1-minute load average to fall below LOAD")
    parser.add_argument("--install-peers", action="store_true", help="first install HTA into benchmarks/.peers")
    args = parser.parse_args()
    if args.install_peers:
        install_peers()
    compile_convdoctor()
    if args.quiet_load is not None:
        wait_for_quiet(args.quiet_load)
    repeats = {f: args.repeats or (5 if f == 1 else 3) for f in args.factors}
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {mem_total_gib():.0f} GiB RAM, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    timings = measure(args.factors, repeats)
    print(f"load average at end {os.getloadavg()[0]:.2f}\n\n{table(timings)}")


if __name__ == "__main__":
    main()
