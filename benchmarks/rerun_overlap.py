"""Do repeated runs of `convdoctor profile` on the same model agree? Each run's intervals against the others'.

    python benchmarks/rerun_overlap.py                      # every example, eval and train, 3 runs each
    python benchmarks/rerun_overlap.py --models small_cnn --modes eval --runs 2 --out /tmp/rerun.md

Each run is a fresh process (``python -m convdoctor profile examples/M.py --mode MODE --format json``, the default
rules), so each has its own copies, warm-up and machine state. For every candidate measured in all runs, and
for the plan, it lists each run's speedup and 95% interval and whether every pair of intervals overlaps and every
verdict agrees: the issue's test that a measured speedup can be trusted ("re-running gives speedups whose
intervals overlap the first run's").
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"


@dataclass(frozen=True)
class Interval:
    speedup: float
    low: float
    high: float
    verdict: str
    busy: float | None  # cores other processes kept busy meanwhile

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        busy = f", busy {self.busy:.1f}" if self.busy is not None and self.busy > 0.25 else ""
        return f"{self.speedup:.2f}× ({self.low:.2f}–{self.high:.2f}{busy})"


def run_profile(model: Path, mode: str, out: Path) -> dict[str, Interval]:
    """One `convdoctor profile` in a fresh process: each measured candidate's interval (and the plan's), by id."""
    command = [sys.executable, "-m", "convdoctor", "profile", str(model), "--mode", mode, "--format", "json",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout)
    found = {f["rule_id"]: _interval(f["measurement"]) for f in report["findings"] if f.get("measurement")}
    plan = report.get("plan")
    if plan and plan.get("measurement"):
        found["plan (" + " + ".join(step["rule_id"] for step in plan["steps"]) + ")"] = _interval(plan["measurement"])
    return found


def _interval(measurement: dict) -> Interval:
    return Interval(measurement["speedup"], measurement["ci_low"], measurement["ci_high"], measurement["verdict"],
                    measurement.get("other_cores_busy"))


def agreement(runs: list[Interval]) -> tuple[bool, bool]:
    """Whether every pair of the runs' intervals overlaps, and whether all verdicts are the same."""
    overlap = all(a.overlaps(b) for a, b in itertools.combinations(runs, 2))
    return overlap, len({r.verdict for r in runs}) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=sorted(p.stem for p in EXAMPLES.glob("*.py")))
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "RERUN.md")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows, agreed, total = [], 0, 0
    with tempfile.TemporaryDirectory() as scratch:
        for model, mode in itertools.product(args.models, args.modes):
            results = [run_profile(EXAMPLES / f"{model}.py", mode, Path(scratch) / f"{model}-{mode}-{i}")
                       for i in range(args.runs)]
            # a plan's steps may differ between runs: compare plans whatever their steps, by their own row
            keys = sorted(set.intersection(*(set(r) for r in results)))
            plans = [next((v for k, v in r.items() if k.startswith("plan")), None) for r in results]
            if all(plans) and not any(k.startswith("plan") for k in keys):
                keys.append("plan")
            for key in keys:
                runs = plans if key == "plan" else [r[key] for r in results]
                overlap, same = agreement(runs)
                agreed += overlap
                total += 1
                rows.append(f"| {model} | {mode} | {key} | {' · '.join(map(str, runs))} | "
                            f"{'yes' if overlap else '**no**'} | {'yes' if same else '**no**'} |")
                print(rows[-1], flush=True)
    lines = [
        "# Re-running `convdoctor profile`: do the intervals of repeated runs overlap?",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}, torch {torch.__version__}. "
        f"Produced by `python benchmarks/rerun_overlap.py --runs {args.runs}`, started {started}: each run a "
        "fresh process with the default rules; busy N marks a run during which other processes kept N cores busy.",
        "",
        "| model | mode | measured | runs: speedup (95% CI) | intervals overlap | same verdict |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Every pair of intervals overlapping: {agreed} of {total}.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"{agreed} of {total} overlap; written to {args.out}")


if __name__ == "__main__":
    main()
