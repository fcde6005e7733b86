"""How often does the harness's interval hold the speedup a long measurement gives? Block series, then resampled.

    python benchmarks/interval_coverage.py collect examples/seed_grouped.py CD101 --minutes 4 --out grouped.json
    python benchmarks/interval_coverage.py collect examples/small_cnn.py identity --minutes 8 --out aa.json
    python benchmarks/interval_coverage.py evaluate grouped.json [more.json ...]

``collect`` profiles the model file (three traced steps, the default rules), takes the named rule's candidate (or
``identity``, a copy of the baseline) and
times blocks of interleaved rounds of baseline against it for ``--minutes``, one block after the other in one
process, as the harness takes one block: fresh copies of both, warmed up (until the timings settle in the first
block, ``warmup_steps`` steps in later ones), then ``max_rounds / blocks`` rounds. It writes each block's start time
and step times as JSON.

``evaluate`` cuts each series into many short measurements of ``n`` blocks, ``gap`` blocks apart (``gap`` 1: blocks in
a row, as in a measuring phase with one candidate; more: blocks spread by other candidates' turns), and computes each
measurement's interval as the harness does (``benchmark.estimate_speedup``), with and without the between-block t
term. It prints how often an interval holds the long-run ratio (the geometric mean of every block's ratio in the
files), how often two measurements' intervals overlap (what a rerun of ``profile`` checks), and the median
half-width.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convdoctor.analyzer.measure.results import SpeedupEstimate

IDENTITY = "identity"  # the candidate that changes nothing: an A/A series, for how often a no-op gets a verdict


def collect(model_file: Path, rule_id: str, minutes: float) -> list[dict]:
    import torch

    from convdoctor.analyzer.capture.host_allocator import keep_heap
    from convdoctor.analyzer.capture.recording import record
    from convdoctor.analyzer.capture.workload import Workload, load_workload, make_step, time_step
    from convdoctor.analyzer.conv.layers import analyze_convs
    from convdoctor.analyzer.measure.benchmark import alternating_rounds, fresh_steps
    from convdoctor.analyzer.measure.results import BenchmarkSettings
    from convdoctor.analyzer.trace.reader import load_profile
    from convdoctor.rules.registry import load_rules, run_rules

    workload = load_workload(model_file, device="cpu", mode="eval")
    for _ in range(2):
        make_step(workload.copy())()
    keep_heap()
    traces = record(workload, Path(tempfile.mkdtemp()), "coverage", steps=3)
    findings = run_rules(load_rules().rules, analyze_convs(load_profile(traces.files[0]))).findings
    transform = (Workload.copy if rule_id == IDENTITY else
                 next(f.candidate.transform for f in findings if f.rule_id == rule_id and f.candidate is not None))
    harness = BenchmarkSettings()
    one_block = BenchmarkSettings(blocks=1, min_rounds=max(1, harness.min_rounds // harness.blocks),
                                  max_rounds=harness.max_rounds // harness.blocks,
                                  target_s=harness.target_s / harness.blocks)
    blocks: list[dict] = []
    started = time.perf_counter()
    while time.perf_counter() - started < minutes * 60:
        steps, _ = fresh_steps((workload, transform(workload.copy())), harness, first=not blocks)
        at = time.perf_counter() - started
        rounds = alternating_rounds(lambda which: time_step(steps[which], torch.device("cpu")), one_block)
        blocks.append({"t": at, "baseline": rounds.times_s[0], "candidate": rounds.times_s[1]})
    return blocks


def _log_ratio(block: dict) -> float:
    return math.log(statistics.median(block["baseline"]) / statistics.median(block["candidate"]))


def _autocorrelation(values: list[float], lag: int) -> float:
    mean = statistics.mean(values)
    spread = sum((v - mean) ** 2 for v in values)
    return sum((values[i] - mean) * (values[i + lag] - mean) for i in range(len(values) - lag)) / spread


def evaluate(series: list[list[dict]], n: int, gap: int, with_t: bool,
             extra: int = 0) -> tuple[int, float, float, float, float]:
    """(measurements, share holding the long-run ratio, share of pairs overlapping, median half-width, share with a
    verdict). ``extra``: a measurement the ``n`` blocks leave undecided takes that many more, ``gap`` apart, as the
    harness's second look does (a measurement without room for them in its series is left out)."""
    from convdoctor.analyzer.measure import benchmark

    long_run = math.exp(statistics.mean(_log_ratio(b) for blocks in series for b in blocks))
    intervals, verdicts = [], 0
    for blocks in series:
        span = (n + extra - 1) * gap + 1
        for first in range(0, len(blocks) - span + 1, (n - 1) * gap + 1):
            e, low, high = _interval([blocks[first + k * gap] for k in range(n)], with_t)
            if extra and benchmark.undecided(e):
                e, low, high = _interval([blocks[first + k * gap] for k in range(n + extra)], with_t)
            intervals.append((e.speedup, low, high))
            verdicts += e.verdict is not benchmark.Verdict.NO_DIFFERENCE
    pairs = list(itertools.combinations(intervals, 2))
    holds = sum(low <= long_run <= high for _, low, high in intervals) / len(intervals)
    overlap = sum(a[1] <= b[2] and b[1] <= a[2] for a, b in pairs) / max(len(pairs), 1)
    half = statistics.median((high - low) / 2 / speedup for speedup, low, high in intervals)
    return len(intervals), holds, overlap, half, verdicts / len(intervals)


def _interval(chosen: list[dict], with_t: bool) -> tuple[SpeedupEstimate, float, float]:
    """The harness's estimate of these blocks, and its interval with or without the between-block t term."""
    from convdoctor.analyzer.measure import benchmark

    base = [t for b in chosen for t in b["baseline"]]
    cand = [t for b in chosen for t in b["candidate"]]
    sizes = [len(b["baseline"]) for b in chosen]
    e = benchmark.estimate_speedup(base, cand, blocks=sizes)
    low, high = (e.ci_low, e.ci_high) if with_t else benchmark.bootstrap_interval(base, cand, sizes)
    return e, low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    collecting = commands.add_parser("collect")
    collecting.add_argument("model_file", type=Path)
    collecting.add_argument("rule_id")
    collecting.add_argument("--minutes", type=float, default=4.0)
    collecting.add_argument("--out", type=Path, required=True)
    evaluating = commands.add_parser("evaluate")
    evaluating.add_argument("series", type=Path, nargs="+", help="files from collect (of one model and rule)")
    evaluating.add_argument("--blocks", type=int, nargs="+", default=[3, 6])
    evaluating.add_argument("--gaps", type=int, nargs="+", default=[1, 3, 6])
    evaluating.add_argument("--second-look", type=int, nargs="+", default=[0],
                            help="extra blocks for an undecided measurement (0: none; several: a row each)")
    args = parser.parse_args()
    if args.command == "collect":
        blocks = collect(args.model_file, args.rule_id, args.minutes)
        args.out.write_text(json.dumps(blocks))
        print(f"{args.out}: {len(blocks)} blocks")
        return
    series = [json.loads(path.read_text()) for path in args.series]
    print(f"{sum(map(len, series))} blocks in {len(series)} series, one every "
          f"{statistics.mean(s[-1]['t'] / (len(s) - 1) for s in series):.2f} s: long-run speedup "
          f"{math.exp(statistics.mean(_log_ratio(b) for s in series for b in s)):.3f}, the blocks' own speedups "
          f"{statistics.mean(statistics.stdev(map(_log_ratio, s)) for s in series):.3f} apart (standard deviation "
          "in logs)")
    print("correlation of block speedups, by blocks apart: " + ", ".join(
        f"{lag}: {statistics.mean(_autocorrelation(list(map(_log_ratio, s)), lag) for s in series):.2f}"
        for lag in (1, 3, 10, 30)))
    print("| blocks | gap | second look | interval | measurements | holds the long-run ratio | pairs overlap | "
          "median half-width | with a verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, gap, extra in itertools.product(args.blocks, args.gaps, args.second_look):
        for with_t in (False, True):
            count, holds, overlap, half, decided = evaluate(series, n, gap, with_t, extra)
            name = "bootstrap + t over blocks" if with_t else "bootstrap over blocks"
            print(f"| {n} | {gap} | {f'+{extra}' if extra else 'none'} | {name} | {count} | {holds:.0%} | "
                  f"{overlap:.0%} | {half:.1%} | {decided:.0%} |")


if __name__ == "__main__":
    main()
