"""How other processes' load moves a measurement, and what `convdoctor profile` says beside busy loops.

Part 1 (the threshold, capture/contention.BUSY_PER_CORE): small_cnn's channels_last candidate, six blocks, measured
beside one busy loop kept busy for a share of every 50 ms (0 to 1 core) and beside two, with a policy that never
waits (contention is recorded, nothing redone). Each row: the others' busy cores the harness read, whether it
called the blocks contended, the speedup and interval, and whether that interval overlaps the quiet one.

Part 2: `convdoctor profile examples/small_cnn.py` in the default mode with --wait-quiet 0, on a quiet machine and
beside one and two busy loops: each candidate's verdict, and whether a verdict claimed beside the loops disagrees
with the quiet run's (target: none).

    python benchmarks/contention.py [--part 1|2] > benchmarks/CONTENTION.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY_LOOP = REPO / "tests" / "busy_loop.py"
CLAIMS = ("faster", "slower", "no measurable difference")  # verdicts a report states as holding
DUTIES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)  # one loop at each duty; 2.0: two loops, each all of the time


@contextmanager
def busy_loops(duty: float) -> Iterator[None]:
    """Busy loops worth ``duty`` cores (one loop at a share of a core, or whole loops), started through a shell so
    that they are not this process's descendants."""
    shares = [] if duty == 0 else [1.0] * int(duty) if duty >= 1 else [duty]
    pids = [int(subprocess.run(["sh", "-c", f'"{sys.executable}" "{BUSY_LOOP}" "" {share} >/dev/null 2>&1 & echo $!'],
                               capture_output=True, text=True, check=True).stdout) for share in shares]
    try:
        time.sleep(0.5)
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def part1(repeats: int) -> None:
    import torch

    sys.path.insert(0, str(REPO / "examples"))
    import small_cnn

    from convdoctor.analyzer.candidates.layout import to_channels_last
    from convdoctor.analyzer.capture.contention import QuietPolicy
    from convdoctor.analyzer.capture.workload import workload_from
    from convdoctor.analyzer.measure.comparison import measure
    from convdoctor.analyzer.measure.results import BenchmarkSettings

    workload = workload_from(small_cnn.get_model(), small_cnn.get_inputs(8), device="cpu")
    settings = BenchmarkSettings(early_stop=False, extra_blocks=0, block_spacing_s=1.0)
    rows, quiet_interval = [], None
    for duty in DUTIES:
        for repeat in range(repeats):
            policy = QuietPolicy(wait_s=0, threads=torch.get_num_threads())
            with busy_loops(duty):
                result = measure(workload, to_channels_last(workload.copy()), settings, quiet=policy)
            e = result.estimate
            interval = (e.ci_low, e.ci_high)
            if duty == 0 and quiet_interval is None:
                quiet_interval = interval
            overlaps = (quiet_interval is not None and interval[0] <= quiet_interval[1]
                        and quiet_interval[0] <= interval[1])
            rows.append(f"| {duty:g} | {repeat + 1} | {result.other_cores_busy or 0:.2f} | "
                        f"{result.contention.contended_blocks} of {result.blocks} | {e.speedup:.2f}× "
                        f"({e.ci_low:.2f}–{e.ci_high:.2f}) | {'yes' if overlaps else '**no**'} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"## Part 1: small_cnn channels_last beside busy loops ({torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores)\n")
    print("| loop duty (cores) | run | others' busy cores read | contended blocks | speedup (95% CI) | "
          "overlaps the first quiet interval |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows) + "\n")


def part2() -> None:
    verdicts: dict[float, dict[str, str]] = {}
    for duty in (0.0, 1.0, 2.0):
        out = Path(tempfile.mkdtemp(prefix="contention-"))
        started = time.perf_counter()
        with busy_loops(duty):
            subprocess.run([sys.executable, "-m", "convdoctor", "profile", str(REPO / "examples" / "small_cnn.py"),
                            "--out", str(out), "--wait-quiet", "0"], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
        report = json.loads((out / "report.json").read_text())
        verdicts[duty] = {f["rule_id"]: (f["measurement"] or {}).get("verdict", "not measured")
                          for f in report["findings"]}
        plan = report["plan"]["measurement"]["verdict"] if report["plan"] else "no plan"
        verdicts[duty]["plan"] = plan
        print(f"{duty}: {wall:.0f} s {verdicts[duty]}", file=sys.stderr, flush=True)
    print("## Part 2: `convdoctor profile examples/small_cnn.py --wait-quiet 0` beside busy loops\n")
    keys = list(verdicts[0.0])
    print("| busy loops (cores) | " + " | ".join(keys) + " | claimed verdicts that differ from the quiet run |")
    print("|---|" + "---|" * (len(keys) + 1))
    for duty, found in verdicts.items():
        claimed = [k for k in keys if found.get(k) in CLAIMS]
        wrong = [k for k in claimed if found[k] != verdicts[0.0][k]]
        print(f"| {duty:g} | " + " | ".join(found.get(k, "-") for k in keys) + f" | {len(wrong)} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=int, choices=(1, 2))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.part in (None, 1):
        part1(args.repeats)
    if args.part in (None, 2):
        part2()


if __name__ == "__main__":
    main()
