"""Wall time of `convdoctor profile` by stage, in the default mode and with --thorough, and whether the two give the
same verdicts and plan, and whether each candidate's two intervals overlap (benchmarks/PROFILE_TIME.md).

Each run is a fresh `python -m convdoctor profile MODEL --out DIR [--thorough]`; its stages are read from the
progress lines on stderr, each stamped with the time it arrived: a stage lasts until the next line.

    python benchmarks/profile_time.py [--models small_cnn resnet18 ...] [--modes eval train] [--json RUNS.json]
    python benchmarks/profile_time.py --table-from RUNS.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_FILES = {
    "small_cnn": REPO / "examples" / "small_cnn.py",
    "resnet18": REPO / "benchmarks" / "model_files" / "resnet18.py",
    "mobilenet_v2": REPO / "benchmarks" / "model_files" / "mobilenet_v2.py",
    "efficientnet_b0": REPO / "benchmarks" / "model_files" / "efficientnet_b0.py",
}
STAGES = (  # (stage, pattern of its progress lines), first match wins
    ("load", r"^loading "),
    ("first steps", r"^checking that the inputs fit"),
    ("wait for quiet", r"^waiting for quiet"),
    ("layout probe", r"^timing each layer alone"),
    ("capture", r"^capturing "),
    ("analysis", r"^analyzing the trace"),
    ("plan", r"^measuring the plan"),
    ("candidates together", r"^measuring CD\d+, .* against one baseline"),
    ("candidate {}", r"^measuring (CD\d+)"),
    ("layer trials", r"^measuring layer "),
)


def stage_of(line: str) -> str:
    for name, pattern in STAGES:
        match = re.search(pattern, line)
        if match:
            return name.format(*match.groups())
    return "other"


def run(model: str, mode: str, thorough: bool) -> dict[str, object]:
    """One profile run: wall time per stage, total, verdicts per rule and the plan's steps."""
    out = Path(tempfile.mkdtemp(prefix=f"profile-time-{model}-"))
    command = [sys.executable, "-m", "convdoctor", "profile", str(MODEL_FILES[model]), "--mode", mode, "--out",
               str(out), "--batch-size", "8", *(["--thorough"] if thorough else [])]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(process.stdout), daemon=True)
    reader.start()
    stamps = [(time.perf_counter() - started, line.removeprefix("convdoctor: ").strip())
              for line in process.stderr]
    process.wait()
    total = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{model} {mode}: exit {process.returncode}: {stamps[-1:]}")
    by_stage: dict[str, float] = defaultdict(float)
    by_stage["start"] = stamps[0][0] if stamps else total
    for (at, line), (until, _) in zip(stamps, [*stamps[1:], (total, "")]):
        by_stage[stage_of(line)] += until - at
    report = json.loads((out / "report.json").read_text())
    measured = {f["rule_id"]: f["measurement"] for f in report["findings"] if f["measurement"]}
    verdicts = {f["rule_id"]: (f["measurement"] or {}).get("verdict", "not measured") for f in report["findings"]}
    intervals = {rule: (m["speedup"], m["ci_low"], m["ci_high"], m["blocks"]) for rule, m in measured.items()}
    plan = [step["rule_id"] for step in report["plan"]["steps"]] if report["plan"] else []
    return {"total": total, "stages": dict(by_stage), "verdicts": verdicts, "intervals": intervals, "plan": plan,
            "reliable": report.get("reliable")}


def overlap(fast: dict[str, object], thorough: dict[str, object]) -> bool:
    """Every candidate measured in both runs has two intervals that overlap, and neither run calls it faster where
    the other calls it slower (a rule that fired in one run only is a difference of findings: "same verdicts")."""
    for rule, (_, low, high, _) in fast["intervals"].items():
        other = thorough["intervals"].get(rule)
        if other is not None and (low > other[2] or high < other[1]):
            return False
        if {fast["verdicts"][rule], thorough["verdicts"].get(rule)} == {"faster", "slower"}:
            return False
    return True


def verdict_cell(result: dict[str, object]) -> str:
    cells = []
    for rule, verdict in result["verdicts"].items():
        if rule in result["intervals"]:
            speedup, low, high, blocks = result["intervals"][rule]
            cells.append(f"{rule} {verdict} {speedup:.2f}× ({low:.2f}–{high:.2f}, {blocks} blocks)")
        else:
            cells.append(f"{rule} {verdict}")
    return ", ".join(cells)


def table(raw: list[dict[str, object]]) -> list[str]:
    """The markdown table of the runs in ``raw`` (one entry per model and mode: its default and --thorough run)."""
    rows = ["| model | mode | run | wall s | stages (s) | verdicts: speedup (95% CI, blocks) | plan "
            "| same verdicts and plan | intervals overlap |", "|---|---|---|---|---|---|---|---|---|"]
    for entry in raw:
        fast, thorough = entry["default"], entry["thorough"]
        same = fast["verdicts"] == thorough["verdicts"] and fast["plan"] == thorough["plan"]
        overlapping = overlap(fast, thorough)
        for label, result in (("default", fast), ("--thorough", thorough)):
            stages = ", ".join(f"{name} {seconds:.0f}" for name, seconds in result["stages"].items()
                               if seconds >= 0.5)
            rows.append(f"| {entry['model']} | {entry['mode']} | {label} | {result['total']:.0f} | {stages} | "
                        f"{verdict_cell(result)} | {' + '.join(result['plan']) or 'none'} | "
                        f"{'yes' if same else '**no**'} | {'yes' if overlapping else '**no**'} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_FILES), choices=list(MODEL_FILES))
    parser.add_argument("--modes", nargs="+", default=["eval"], choices=["eval", "train"])
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--table-from", type=Path, help="print the table of a --json file's runs, running nothing")
    args = parser.parse_args()
    if args.table_from:
        print("\n".join(table(json.loads(args.table_from.read_text()))))
        return
    raw = []
    for model in args.models:
        for mode in args.modes:
            raw.append({"model": model, "mode": mode, "default": run(model, mode, False),
                        "thorough": run(model, mode, True)})
            print(table(raw[-1:])[-1], file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(raw, indent=1))
    print("\n".join(table(raw)))

if __name__ == "__main__":
    main()
