"""Does convdoctor's plan beat what an expert tries blindly? Measured on this machine, in one run.

    python benchmarks/advice_quality.py [--quick] [--modes eval train] [--out benchmarks/RESULTS.md]

For each model and mode it measures, against the same baseline with convdoctor's own A/B harness:
(a) convdoctor's combined plan (`convdoctor.profile` with every default rule, CD120's compile with freezing
    included, and the opt-in CD116 torch-compile; the architecture rules CD107/CD108 are left out: they need
    retraining and never enter the plan),
(b) the blind peers (``peers``): channels_last, torch.compile, bfloat16 autocast with channels_last, and in eval
    torch.compile with inductor freezing, that with bf16 and channels_last, and max-autotune with freezing (each
    compile's first call, outside the timing, reported beside it),
and each measured finding's predicted saving beside its measured one, where the analysis predicts one. Then the
plan is timed head to head against the best of channels_last, torch.compile and compile + freezing, and (eval)
against compile + freezing + bf16 + channels_last: two separate measurements against the baseline differ by more
than their intervals on a shared machine, one measurement of the two against each other does not.

Each row (model and mode) runs in a fresh process of its own, as `convdoctor profile` does for a user: a process
that has already run other models holds their heaps, and its timings differ (MobileNetV2 eval 102 ms as the fifth
row of one long process, 73-80 ms in a fresh one).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]

import models  # noqa: E402
import small_cnn  # noqa: E402

from convdoctor.analyzer.candidates.candidate import combine  # noqa: E402
from convdoctor.analyzer.candidates.layout import to_channels_last  # noqa: E402
from convdoctor.analyzer.candidates.torch_parts import Compiled as CompiledModel  # noqa: E402
from convdoctor.analyzer.candidates.transforms import autocast, compiled, frozen_compiled  # noqa: E402
from convdoctor.analyzer.capture.hardware import device_name  # noqa: E402
from convdoctor.analyzer.capture.workload import Workload, workload_from  # noqa: E402
from convdoctor.analyzer.measure.benchmark import BenchmarkSettings, Measurement  # noqa: E402
from convdoctor.analyzer.measure.comparison import measure  # noqa: E402
from convdoctor.analyzer.measure.results import MIN_EFFECT, FindingOutcome, Plan, Verdict  # noqa: E402
from convdoctor.api import ProfileOptions, profile  # noqa: E402
from convdoctor.reports.presentation import measured_result  # noqa: E402
from convdoctor.rules.base import SavingBound  # noqa: E402

Transform = Callable[[Workload], Workload]
PREDICTION_TOLERANCE = 0.25  # the goal: predicted savings within ±25% of the measured ones


@dataclass(frozen=True)
class Case:
    name: str
    model: nn.Module
    inputs: torch.Tensor


CASE_NAMES = ("small_cnn", "resnet18", "mobilenet_v2", "efficientnet_b0")
QUICK_CASE_NAMES = CASE_NAMES[:2]


def case(name: str, quick: bool) -> Case:
    """One model with random weights (seed 0) and its inputs: batch 8, or 2 with ``--quick``."""
    torch.manual_seed(0)
    batch = 2 if quick else 8
    if name == "small_cnn":
        return Case(name, small_cnn.get_model(), small_cnn.get_inputs(batch))
    model = {"resnet18": models.ResNet18, "mobilenet_v2": models.MobileNetV2,
             "efficientnet_b0": models.EfficientNetB0}[name]()
    return Case(name, model, torch.randn(batch, 3, 224, 224))


def _why_not(outcome: FindingOutcome) -> str:
    """A finding's measured result, and whether its numerics or an architecture change kept it out of the plan."""
    numerics = "" if outcome.numerics_ok in (None, True) else ", numerics beyond tolerance"
    return f"{outcome.finding.rule_id} {measured_result(outcome)}{numerics}"


def expert_recipe(workload: Workload) -> Workload:
    """channels_last everywhere; on a GPU also bf16 autocast — applied without looking at the profile."""
    workload = to_channels_last(workload)
    return autocast(torch.bfloat16)(workload) if workload.device.type == "cuda" else workload


def _stack(*transforms: Transform) -> Transform:
    """The transforms applied in order (channels_last, then autocast, then the compile outermost)."""
    def transform(workload: Workload) -> Workload:
        for step in transforms:
            workload = step(workload)
        return workload
    return transform


def max_autotune_frozen(workload: Workload) -> Workload:
    """torch.compile(mode="max-autotune") with inductor freezing: compiled once per comparison, as CD120's is."""
    return replace(workload, model=CompiledModel(workload.model, freezing=True, mode="max-autotune"), reuse_copy=True)


def peers(mode: str) -> dict[str, Transform]:
    """What an expert would try blindly, by name: channels_last, torch.compile, bfloat16 autocast with
    channels_last; in eval also torch.compile with inductor freezing, that with bf16 and channels_last (the recipe
    that measured 2.4-3.3x on an AVX512-BF16 CPU), and max-autotune with freezing."""
    bf16 = autocast(torch.bfloat16)
    found = {"channels_last": expert_recipe, "torch.compile": compiled,
             "bf16 + channels_last": _stack(to_channels_last, bf16)}
    if mode == "eval":
        found |= {"compile + freezing": frozen_compiled,
                  FULL_RECIPE: _stack(to_channels_last, bf16, frozen_compiled),
                  "max-autotune + freezing": max_autotune_frozen}
    return found


FULL_RECIPE = "compile + freezing + bf16 + channels_last"
HEAD_TO_HEAD_PEERS = ("channels_last", "torch.compile", "compile + freezing")  # the plan against the best of these


def run_row(name: str, mode: str, quick: bool) -> dict[str, object]:
    """One row of the table, measured in this process: its measurements as plain numbers (``_interval``)."""
    # the harness's own settings (what `profile` uses); --quick: half the rounds. With 40 rounds over the six blocks,
    # a block's median of 6-7 rounds was too noisy for the blocks' t interval: no plan in any --quick row.
    settings = BenchmarkSettings(max_rounds=60, target_s=3.0) if quick else BenchmarkSettings()
    row_case = case(name, quick)
    print(f"== {name} {mode}", flush=True)
    baseline = workload_from(row_case.model, row_case.inputs, device="cpu", mode=mode)
    with tempfile.TemporaryDirectory() as out:
        report, _ = profile(row_case.model, row_case.inputs, ProfileOptions(
            mode=mode, device="cpu", steps=2, out_dir=Path(out), select=("CD1", "CD116"),
            ignore=("CD107", "CD108"), benchmark=settings))
    plan = report.plan
    measured = {peer: measure(baseline, transform(baseline.copy()), settings)
                for peer, transform in peers(mode).items()}
    best_peer = max((p for p in HEAD_TO_HEAD_PEERS if p in measured), key=lambda p: measured[p].estimate.speedup)
    transforms = peers(mode)
    head_to_head = (measure(transforms[best_peer](baseline.copy()), plan_workload(baseline, plan), settings)
                    if plan else None)
    against_recipe = (measure(transforms[FULL_RECIPE](baseline.copy()), plan_workload(baseline, plan), settings)
                      if plan and FULL_RECIPE in transforms else None)
    row = {
        "model": name, "mode": mode, "batch": int(row_case.inputs.shape[0]),
        "baseline_ms": measured["channels_last"].estimate.baseline_ms,
        "plan": _interval(plan.measurement if plan else None),
        "plan_steps": (_plan_steps(plan) if plan
                       else "no accepted fix: " + "; ".join(_why_not(o) for o in report.outcomes)),
        "predictions": _predictions(report.outcomes),
        "peers": {peer: _interval(m) | {"first_step_s": m.first_step_s[1], "max_rel_error": m.numerics.max_rel_error}
                  for peer, m in measured.items()},
        "best_peer": best_peer, "head_to_head": _interval(head_to_head),
        "against_recipe": _interval(against_recipe),
    }
    print(row["plan_steps"], _cell(row["plan"]), *(f"{p}: {_cell(i)}" for p, i in row["peers"].items()),
          f"plan vs {best_peer}:", _head_to_head_cell(row["head_to_head"]),
          f"plan vs {FULL_RECIPE}:", _head_to_head_cell(row["against_recipe"]), flush=True)
    return row


def run(quick: bool, modes: tuple[str, ...] = ("eval", "train")) -> list[dict[str, object]]:
    """Every row of ``modes``, each in a fresh process of its own (this script with ``--row``)."""
    rows = []
    for name in QUICK_CASE_NAMES if quick else CASE_NAMES:
        for mode in modes:
            with tempfile.TemporaryDirectory() as scratch:
                row_file = Path(scratch) / "row.json"
                command = [sys.executable, __file__, "--row", name, mode, "--row-json", str(row_file)]
                subprocess.run(command + (["--quick"] if quick else []), check=True)
                rows.append(json.loads(row_file.read_text()))
    return rows


def _interval(measurement: Measurement | None) -> dict[str, object] | None:
    """What the table shows of a measurement: speedup, 95% interval and verdict."""
    if measurement is None:
        return None
    e = measurement.estimate
    return {"speedup": e.speedup, "ci_low": e.ci_low, "ci_high": e.ci_high, "verdict": e.verdict.value}


def plan_workload(baseline: Workload, plan: Plan) -> Workload:
    """A copy of the baseline with the plan's steps applied together, as ``profile`` measured them."""
    return combine([step.finding.candidate for step in plan.steps]).transform(baseline.copy())


def _head_to_head_cell(interval: dict[str, object] | None) -> str:
    """The plan timed against the best peer directly (above 1: the plan is faster), with its verdict."""
    if interval is None:
        return "— (no plan)"
    return f"{_cell(interval)} {interval['verdict']}"


def _plan_steps(plan: Plan) -> str:
    """``channels-last + torch-compile``, and the accepted fixes the plan was not faster with."""
    left = "".join(f" (left out: {lo.outcome.finding.rule_name}, {lo.reason})" for lo in plan.left_out)
    return " + ".join(s.finding.rule_name for s in plan.steps) + left


def _predictions(outcomes: list[FindingOutcome]) -> list[tuple[str, float, float, float, float]]:
    """(rule name, predicted saving, measured saving, and the measured saving's 95% interval) of every measured
    finding whose analysis predicts a saving: the prediction is the estimated share of the step; a measured saving
    is ``1 - 1/speedup``."""
    return [(o.finding.rule_name + ("" if o.finding.saving_bound is SavingBound.ESTIMATE
                                    else f" ({o.finding.saving_bound.value})"),
             o.finding.estimated_saving, *(1 - 1 / speedup for speedup in (e.speedup, e.ci_low, e.ci_high)))
            for o in outcomes if o.finding.estimated_saving is not None and o.measurement is not None
            for e in [o.measurement.estimate]]


def within(predicted: float, measured: float) -> bool:
    """The issue's bar, ±25% of the measured saving, with a floor of one point of the step (the harness's
    MIN_EFFECT: a measured saving under 1% is "no measurable difference")."""
    return abs(predicted - measured) <= max(PREDICTION_TOLERANCE * abs(measured), MIN_EFFECT)


def within_interval(predicted: float, low: float, high: float) -> bool:
    """The same bar against the measurement's uncertainty: ±25% of some saving inside its 95% interval (the
    nearest one to the prediction is the one to check: the bar widens with the saving, but slower than the gap)."""
    return within(predicted, min(max(predicted, low), high))


def _percent(share: float) -> str:
    """A share in whole percent, without the "-0%" that formatting a small negative number gives."""
    return f"{int(round(share * 100))}%"


def _prediction_cell(predictions: list[list]) -> str:
    return "; ".join(f"{name} {_percent(p)} vs {_percent(m)} ({_percent(low)}–{_percent(high)})"
                     f"{'' if within(p, m) else ' (off)' if not within_interval(p, low, high) else ' (off the median)'}"
                     for name, p, m, low, high in predictions) or "—"


def _cell(interval: dict[str, object] | None) -> str:
    if interval is None:
        return "1.00× (no plan)"
    return f"{interval['speedup']:.2f}× ({interval['ci_low']:.2f}–{interval['ci_high']:.2f})"


PEER_COLUMNS = ("channels_last", "torch.compile", "compile + freezing", "bf16 + channels_last", FULL_RECIPE,
                "max-autotune + freezing")


def _peer_cell(row: dict[str, object], peer: str) -> str:
    """A peer's speedup and interval, and its first call's seconds where it compiles; — where it does not apply."""
    interval = row["peers"].get(peer)
    if interval is None:
        return "—"
    compile_s = f", first call {interval['first_step_s']:.0f} s" if interval["first_step_s"] >= 1 else ""
    return f"{_cell(interval)}{compile_s}"


def write_results(rows: list[dict[str, object]], path: Path) -> None:
    lines = [
        "# Advice quality: convdoctor's plan against what an expert tries blindly",
        "",
        f"Machine: {device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads; "
        f"Python {platform.python_version()}, torch {torch.__version__}; bfloat16 native: "
        f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}. Produced by `python benchmarks/advice_quality.py`; "
        "speedups are medians of interleaved rounds against the same baseline, with 95% intervals (the harness's: "
        "bootstrap and t over blocks). A compiled peer's first call (its compile) is outside the timing.",
        "",
        "| model | mode | batch | baseline ms | convdoctor plan | plan steps | predicted vs measured saving, alone "
        "| " + " | ".join(PEER_COLUMNS) + " | plan vs the best of channels_last, torch.compile and compile + "
        "freezing, head to head | plan vs " + FULL_RECIPE + ", head to head |",
        "|" + "---|" * (10 + len(PEER_COLUMNS)),
    ]
    for row in rows:
        peers_cells = " | ".join(_peer_cell(row, peer) for peer in PEER_COLUMNS)
        lines.append(f"| {row['model']} | {row['mode']} | {row['batch']} | {row['baseline_ms']:.1f} "
                     f"| {_cell(row['plan'])} | {row['plan_steps']} | {_prediction_cell(row['predictions'])} "
                     f"| {peers_cells} | vs {row['best_peer']}: {_head_to_head_cell(row['head_to_head'])} "
                     f"| {_head_to_head_cell(row['against_recipe']) if row['against_recipe'] else '—'} |")
    predictions = [tuple(p[1:]) for row in rows for p in row["predictions"]]
    estimates = [tuple(p[1:]) for row in rows for p in row["predictions"] if "(" not in p[0]]
    duels = [row["head_to_head"] for row in rows]
    ahead = sum(d is not None and d["verdict"] == Verdict.FASTER.value for d in duels)
    level_or_ahead = sum(d is not None and d["verdict"] != Verdict.SLOWER.value for d in duels)
    recipe_duels = [row["against_recipe"] for row in rows if row["mode"] == "eval"]
    recipe_level = sum(d is not None and d["verdict"] != Verdict.SLOWER.value for d in recipe_duels)
    lines += ["", f"The plan timed head to head against the best of channels_last, torch.compile and (eval) "
              f"torch.compile with freezing (the plan's steps applied together to a fresh copy, the peer as the "
              f"baseline): strictly ahead on {ahead} of {len(rows)} rows, level or ahead on {level_or_ahead} (no plan "
              f"counts as behind). Against {FULL_RECIPE}: level or ahead on {recipe_level} of {len(recipe_duels)} "
              "eval rows."]
    lines += ["", f"Predictions within ±{PREDICTION_TOLERANCE:.0%} of the measured saving (or within one point of the "
              f"step): {sum(within(p, m) for p, m, _, _ in estimates)} of {len(estimates)} estimates; "
              f"{sum(within(p, m) for p, m, _, _ in predictions)} of {len(predictions)} with the bounds (at most, "
              "part). Within ±25% of some saving inside the measured 95% interval: "
              f"{sum(within_interval(p, low, high) for p, _, low, high in estimates)} of {len(estimates)} estimates. "
              "(off) marks a prediction outside both, (off the median) one that is only within the interval."]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small models, batch 2, fewer rounds")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--modes", nargs="+", choices=("eval", "train"), default=["eval", "train"])
    parser.add_argument("--row", nargs=2, metavar=("MODEL", "MODE"), help="measure one row in this process")
    parser.add_argument("--row-json", type=Path, help="with --row: where to write the row")
    args = parser.parse_args()
    if args.row:
        row = run_row(*args.row, quick=args.quick)
        if args.row_json:
            args.row_json.write_text(json.dumps(row))
        return
    write_results(run(args.quick, tuple(args.modes)), args.out)


if __name__ == "__main__":
    main()
