"""Does glibc's allocator state move a measured speedup? channels_last on an example, in fresh processes.

    python benchmarks/allocator_state.py                          # examples/seed_grouped.py, eval, 3 processes each
    python benchmarks/allocator_state.py --model examples/small_cnn.py --processes 2

Each process loads the model, measures channels_last (CD101's candidate) against the baseline with convdoctor's
harness (its blocks of fresh copies, interleaved rounds) and prints the speedup, its interval and the median
baseline and candidate step of each block — once with glibc's defaults, once with the heap kept (``keep_heap``,
as ``convdoctor profile`` does before it traces and measures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ONE_PROCESS = """
import json, statistics, sys
import torch
from convdoctor.analyzer.measure.benchmark import _interleaved_rounds
from convdoctor.analyzer.capture.host_allocator import keep_heap
from convdoctor.analyzer.measure.results import BenchmarkSettings
from convdoctor.analyzer.capture.workload import load_workload
from convdoctor.analyzer.candidates.layout import to_channels_last

torch.set_num_threads(2)
kept = keep_heap() if sys.argv[2] == "kept" else False
baseline = load_workload(sys.argv[1], mode=sys.argv[3])
rounds = _interleaved_rounds(baseline, to_channels_last(baseline.copy()), BenchmarkSettings(), None)
estimate, start, blocks = rounds.estimate(), 0, []
for size in rounds.blocks:
    blocks.append([round(statistics.median(times[start:start + size]) * 1e3, 1) for times in rounds.times_s])
    start += size
print(json.dumps({"kept": kept, "speedup": estimate.speedup, "ci": [estimate.ci_low, estimate.ci_high],
                  "blocks_ms": blocks}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=HERE.parent / "examples" / "seed_grouped.py")
    parser.add_argument("--mode", choices=["eval", "train"], default="eval")
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    print(f"channels_last on {args.model.name} ({args.mode}), {args.processes} fresh processes per allocator state")
    for state in ("defaults", "kept"):
        speedups = []
        for _ in range(args.processes):
            done = subprocess.run([sys.executable, "-c", ONE_PROCESS, str(args.model), state, args.mode],
                                  capture_output=True, text=True, env=clean, check=True)
            result = json.loads(done.stdout)
            speedups.append(result["speedup"])
            blocks = ", ".join(f"{b:.1f}/{c:.1f}" for b, c in result["blocks_ms"])
            print(f"  heap {state}: {result['speedup']:.2f}x ({result['ci'][0]:.2f}-{result['ci'][1]:.2f}); "
                  f"baseline/candidate ms per block: {blocks}", flush=True)
        print(f"  heap {state}: speedups {min(speedups):.2f}-{max(speedups):.2f}x, "
              f"median {statistics.median(speedups):.2f}x")


if __name__ == "__main__":
    main()
