"""Does one process measure channels_last the same way twice? Repeated measurements of one candidate, in one process.

    python benchmarks/repeat_in_process.py examples/seed_grouped.py [--repeats 3] [--pause 20] [--blocks 3]
        [--target-s 4] [--min-rounds 10] [--max-rounds 60] [--processes 4]

Each process loads the model file, runs two warm steps, keeps glibc's heap (as ``profile`` does), then measures
channels_last against the baseline ``--repeats`` times with convdoctor's harness (``analyzer.benchmark.measure``),
``--pause`` seconds apart, and prints one line: each measurement's speedup and 95% interval. When the intervals of
one process do not overlap, what a rerun of ``profile`` disagrees on is the machine's state over time, not the
process (benchmarks/RERUN.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def measure_repeatedly(model_file: Path, repeats: int, pause_s: float, settings: dict[str, float]) -> str:
    from convdoctor.analyzer.candidates.layout import to_channels_last
    from convdoctor.analyzer.capture.host_allocator import keep_heap
    from convdoctor.analyzer.capture.workload import load_workload, make_step
    from convdoctor.analyzer.measure.comparison import measure
    from convdoctor.analyzer.measure.results import BenchmarkSettings

    workload = load_workload(model_file, device="cpu", mode="eval")
    for _ in range(2):
        make_step(workload.copy())()
    keep_heap()
    harness = BenchmarkSettings(**settings)
    cells = []
    for index in range(repeats):
        if index:
            time.sleep(pause_s)
        e = measure(workload, to_channels_last(workload.copy()), harness).estimate
        cells.append(f"{e.speedup:.2f}x ({e.ci_low:.2f}-{e.ci_high:.2f}), baseline {e.baseline_ms:.1f} ms")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_file", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pause", type=float, default=20.0, help="seconds between measurements")
    parser.add_argument("--blocks", type=int, default=3, help="the harness's settings (its defaults)")
    parser.add_argument("--target-s", type=float, default=4.0)
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--max-rounds", type=int, default=60)
    parser.add_argument("--processes", type=int, default=4, help="fresh processes, one after the other")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        settings = {"blocks": args.blocks, "target_s": args.target_s, "min_rounds": args.min_rounds,
                    "max_rounds": args.max_rounds}
        print(measure_repeatedly(args.model_file, args.repeats, args.pause, settings), flush=True)
        return
    for _ in range(args.processes):
        subprocess.run([sys.executable, __file__, "--in-process", *sys.argv[1:]], check=True)


if __name__ == "__main__":
    main()
