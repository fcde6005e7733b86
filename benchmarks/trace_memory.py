"""Peak memory and wall time of `convdoctor analyze` on large traces built from the real V100 ResNet-50 trace.

    python benchmarks/trace_memory.py                 # 1x, 10x, 30x the V100 trace (75k, 757k, 2.27M events)
    python benchmarks/trace_memory.py --factors 1 10
    python benchmarks/trace_memory.py --where 10      # tracemalloc: what is alive after each parse stage

A trace of factor N repeats the V100 trace's events N times, each copy shifted by the trace's span in time and
by a fixed offset in its correlation ids, External ids, sequence numbers, flow ids and ProfilerStep numbers, so
that the copies link and nest as the original does (6N steps, 53 conv layers). It is written gzipped to a
temporary folder. Each measurement runs `python -m convdoctor analyze TRACE --out DIR` in a fresh process and
reads that process's peak RSS from the kernel (``os.wait4``), so nothing of the builder or of an earlier run is
counted. The first row (factor 0) is the same process importing convdoctor's CLI and analysis modules only
(torch included): the fixed cost every run pays.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
V100 = REPO / "tests" / "data" / "resnet50_v100_train_fp32.pt.trace.json.gz"
ID_KEYS = ("correlation", "External id", "external id", "Sequence number")
IMPORT_ONLY = "import convdoctor.cli, convdoctor.api, convdoctor.analyzer.trace.reader, convdoctor.rules.registry"


def repeated_events(data: dict[str, Any], factor: int) -> Iterator[dict[str, Any]]:
    """The trace's events ``factor`` times, each copy shifted in time, ids and step numbers."""
    events = data["traceEvents"]
    times = [e["ts"] + e.get("dur", 0) for e in events if isinstance(e.get("ts"), (int, float))]
    span = max(times) - min(times) + 1000
    id_stride = 1 + max((e["args"][k] for e in events if isinstance(e.get("args"), dict) for k in ID_KEYS
                         if isinstance(e["args"].get(k), int)), default=0)
    flow_stride = 1 + max((e["id"] for e in events if isinstance(e.get("id"), int)), default=0)
    steps = [int(e["name"].split("#")[1]) for e in events if str(e.get("name", "")).startswith("ProfilerStep#")]
    step_stride = max(steps) - min(steps) + 1 if steps else 0
    for copy in range(factor):
        for event in events:
            if copy == 0:
                yield event
                continue
            event = dict(event)
            if isinstance(event.get("ts"), (int, float)):
                event["ts"] += copy * span
            if isinstance(event.get("id"), int):
                event["id"] += copy * flow_stride
            if isinstance(event.get("args"), dict):
                args = event["args"] = dict(event["args"])
                for key in ID_KEYS:
                    if isinstance(args.get(key), int) and args[key] >= 0:
                        args[key] += copy * id_stride
                if isinstance(args.get("external ts"), (int, float)):
                    args["external ts"] += copy * span
            name = str(event.get("name", ""))
            if name.startswith("ProfilerStep#"):
                event["name"] = f"ProfilerStep#{int(name.split('#')[1]) + copy * step_stride}"
            yield event


def v100_trace() -> dict[str, Any]:
    """The real V100 ResNet-50 training trace that the large traces repeat, decoded."""
    return json.loads(gzip.decompress(V100.read_bytes()))


def build_trace(data: dict[str, Any], factor: int, path: Path) -> tuple[int, int]:
    """Write the factor-N trace gzipped to ``path``, one event at a time; (events, uncompressed bytes)."""
    count = size = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
        head = json.dumps({k: v for k, v in data.items() if k != "traceEvents"})[:-1] + ', "traceEvents": ['
        out.write(head)
        size += len(head)
        for event in repeated_events(data, factor):
            text = ("," if count else "") + json.dumps(event)
            out.write(text)
            size += len(text)
            count += 1
        out.write("]}")
    return count, size + 2


def run_measured(command: list[str]) -> tuple[float, float, int]:
    """Run ``command``; (peak RSS in MiB, wall seconds, exit code) of that process (the largest of it and the
    children it waited for: ``os.wait4`` reports the maximum over them)."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty command cannot block on a full pipe
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            sys.stderr.write(errors.read().decode(errors="replace")[-2000:])
    return usage.ru_maxrss / 1024, wall, proc.returncode  # ru_maxrss is in KiB on Linux


def measure(factors: list[int], keep: Path | None) -> None:
    data = v100_trace()
    scratch = Path(tempfile.mkdtemp(prefix="convdoctor-trace-memory-", dir=keep))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {mem_total_gib():.0f} GiB RAM, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    rows = []
    rss, wall, rc = run_measured([sys.executable, "-c", IMPORT_ONLY])
    rows.append((0, 0, 0.0, 0.0, rss, wall, rc))
    for factor in factors:
        path = scratch / f"v100x{factor}.pt.trace.json.gz"
        events, raw_bytes = build_trace(data, factor, path)
        rss, wall, rc = run_measured([sys.executable, "-m", "convdoctor", "analyze", str(path),
                                      "--out", str(scratch / f"out{factor}")])
        rows.append((factor, events, path.stat().st_size / 2**20, raw_bytes / 2**20, rss, wall, rc))
        if keep is None:
            path.unlink()
    base = rows[0][4]
    print("\n| factor | events | gz MiB | JSON MiB | peak RSS MiB | RSS - import MiB | (RSS - import) / JSON | "
          "wall s | exit |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for factor, events, gz, raw, rss, wall, rc in rows:
        ratio = f"{(rss - base) / raw:.1f}" if raw else "-"
        label = "import only" if factor == 0 else f"{factor}x"
        print(f"| {label} | {events:,} | {gz:.1f} | {raw:.0f} | {rss:,.0f} | {rss - base:,.0f} | {ratio} | "
              f"{wall:.1f} | {rc} |")


def where(factor: int) -> None:
    """tracemalloc in this process: what is alive after reading, after typing, after analysis (and the peaks)."""
    from convdoctor.analyzer.conv.layers import analyze_convs
    from convdoctor.analyzer.trace.reader import load_profile, parse_trace, read_trace
    from convdoctor.rules.registry import load_rules, run_rules

    data = v100_trace()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"v100x{factor}.pt.trace.json.gz"
        build_trace(data, factor, path)
        del data
        gc.collect()
        tracemalloc.start(3)
        raw = read_trace(path)
        _report("read_trace, whole events (raw JSON objects)")
        del raw
        gc.collect()
        tracemalloc.reset_peak()
        raw = read_trace(path, slim=True)
        _report("read_trace(slim=True), load_profile's fallback reading")
        profile = parse_trace(raw, str(path))
        _report("parse_trace, raw objects still referenced")
        top = tracemalloc.take_snapshot()
        del raw, profile
        gc.collect()
        tracemalloc.reset_peak()
        profile = load_profile(path)
        _report("load_profile: events typed while decoded (the Profile alone)")
        analysis = analyze_convs(profile)
        run_rules(load_rules().rules, analysis)
        _report("after analyze_convs and the rules")
    print("\nlargest allocation sites while raw and typed objects were both alive:")
    for stat in top.statistics("lineno")[:12]:
        frame = stat.traceback[0]
        print(f"  {stat.size / 2**20:8.1f} MiB  {stat.count:>9,} blocks  {Path(frame.filename).name}:{frame.lineno}")


def _report(stage: str) -> None:
    current, peak = tracemalloc.get_traced_memory()
    print(f"{stage:<55} now {current / 2**20:8.1f} MiB   peak so far {peak / 2**20:8.1f} MiB")


def mem_total_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--where", type=int, metavar="FACTOR", help="tracemalloc breakdown for one factor")
    parser.add_argument("--keep", type=Path, help="build the traces under this folder and keep them")
    args = parser.parse_args()
    if args.where:
        where(args.where)
    else:
        measure(args.factors, args.keep)


if __name__ == "__main__":
    main()
