"""An oracle for convdoctor's figures: the same quantities read from a trace with plain json/gzip and a few lines of
its own, beside what convdoctor's report.json says.

It imports nothing of convdoctor's analyzer: its definitions are written out below, one function each, so that a
disagreement is either a bug in convdoctor or a definition that differs on purpose (ORACLE.md names those).

Per trace:
- steps: the host ``ProfilerStep#N`` events (CPU op or user annotation); without them the whole traced span (host
  events and device events) is one step;
- step_ms: the mean duration of those steps;
- kernel_ms: the durations of the GPU kernels (not memcpy, not memset) that start inside a step, per step;
- conv_fwd_ms / conv_bwd_ms: the device events (kernels, and the memsets/memcpys cuDNN issues), layout
  conversions excluded, launched (correlation id -> runtime call -> the CPU operators around it on its thread)
  from inside a forward conv operator (``aten::*conv*``, no ``backward``) or a conv backward (an operator whose
  name holds ``conv`` and ``backward``, but not autograd's ``evaluate_function`` wrapper, whose gradient sums for a
  tensor used twice are not the conv's), per step;
- conversion_ms: cuDNN's NCHW<->NHWC transpose kernels launched from inside a conv operator, forward or backward;
- nccl_ms: the durations of kernels whose name holds ``nccl``, per step;
- overlap_ms: the time NCCL kernels run while another kernel (not memcpy/memset) runs, per step (HTA's definition);
- idle_ms: the step's span less the union of every device event (kernel, memcpy, memset) on the busiest device;
- rank: ``distributedInfo.rank``.

The conv figures are device time: none (–) for a trace without device events, where convdoctor's are host time.

All per-step figures are over the kernels that START inside a step span, divided by the number of steps; but the
conv figures, which are over the device events LAUNCHED inside a step (a runtime call inside its span: the GPU may
run them after the host has left the step).

    python benchmarks/oracle.py [TRACE ...]        # default: the cached corpus (benchmarks/fetch_corpus.py)
    python benchmarks/oracle.py --markdown benchmarks/ORACLE.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

CONVERSION = re.compile(r"nchwToNhwc|nhwcToNchw|nchw2nhwc|nhwc2nchw", re.IGNORECASE)
STEP = re.compile(r"^ProfilerStep#\d+$")


def load(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The trace's events and its other top-level values (the JSON array form has none)."""
    raw = path.read_bytes()
    data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    if isinstance(data, list):
        return [e for e in data if isinstance(e, dict)], {}
    return [e for e in data.get("traceEvents", []) if isinstance(e, dict)], data


def oracle(path: Path) -> dict[str, Any]:
    events, top = load(path)
    complete = [e for e in events if e.get("ph") == "X" and isinstance(e.get("ts"), (int, float))]
    for e in complete:
        e["cat"] = str(e.get("cat", "")).lower()
        e.setdefault("dur", 0)
        e.setdefault("args", {})
    host = [e for e in complete if e["cat"] in ("cpu_op", "operator", "user_annotation", "cuda_runtime", "runtime",
                                                "cuda_driver", "python_function")]
    device = [e for e in complete if e["cat"] in ("kernel", "gpu_memcpy", "memcpy", "gpu_memset", "memset")]
    kernels = [e for e in device if e["cat"] == "kernel"]
    steps = sorted((e["ts"], e["ts"] + e["dur"]) for e in host
                   if e["cat"] in ("cpu_op", "operator", "user_annotation") and STEP.match(str(e.get("name"))))
    if not steps:
        tops = host + device
        steps = [(min(e["ts"] for e in tops), max(e["ts"] + e["dur"] for e in tops))] if tops else []
    n = max(len(steps), 1)

    def in_steps(e: dict[str, Any]) -> bool:
        return any(start <= e["ts"] < end for start, end in steps)

    stepped = [k for k in kernels if in_steps(k)]
    passes = _conv_passes(host, device, in_steps)
    info = top.get("distributedInfo")
    nccl = [k for k in stepped if "nccl" in str(k.get("name")).lower()]
    other = [k for k in stepped if "nccl" not in str(k.get("name")).lower()]
    return {
        "steps": max(len(steps), 1),
        "step_ms": sum(end - start for start, end in steps) / n / 1e3,
        "kernel_ms": sum(k["dur"] for k in stepped) / n / 1e3 if device else None,
        "conv_fwd_ms": _pass_ms(device, passes, "forward", n) if device else None,
        "conv_bwd_ms": _pass_ms(device, passes, "backward", n) if device else None,
        "conversion_ms": _pass_ms(device, passes, "conversion", n) if device else None,
        "nccl_ms": sum(k["dur"] for k in nccl) / n / 1e3 if device else None,
        "overlap_ms": _length(_intersect(_union(nccl), _union(other))) / n / 1e3 if device else None,
        "idle_ms": _idle(device, steps) / n / 1e3 if device else None,
        "rank": info.get("rank") if isinstance(info, dict) else None,
        "kernels": len(kernels),
        "conv_ops": sum(1 for e in host if _conv_forward(e)),
    }


def _pass_ms(device: list[dict[str, Any]], passes: dict[int, str], which: str, steps: int) -> float:
    return sum(k["dur"] for k in device if passes.get(id(k)) == which) / steps / 1e3


def _conv_forward(e: dict[str, Any]) -> bool:
    name = str(e.get("name", "")).lower()
    is_op = e["cat"] in ("cpu_op", "operator") and name.startswith("aten::")
    return is_op and "conv" in name and "backward" not in name


def _conv_backward(e: dict[str, Any]) -> bool:
    """A conv's autograd node or its aten backward; not the engine's ``evaluate_function`` wrapper around the node,
    which also sums the gradients of a tensor used twice (a residual branch): that add is not the conv's."""
    name = str(e.get("name", "")).lower()
    return (e["cat"] in ("cpu_op", "operator") and "conv" in name and "backward" in name
            and not name.startswith("autograd::engine"))


def _conv_passes(host: list[dict[str, Any]], kernels: list[dict[str, Any]], in_steps: Any) -> dict[int, str]:
    """Each conv kernel's pass ("forward", "backward", or "conversion" for a transpose kernel in either), for the
    kernels launched by a runtime call that starts inside a step."""
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for e in host:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    enclosing: dict[Any, str] = {}  # a runtime call's correlation id -> the pass of the conv op around it
    for events in by_thread.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[tuple[float, str | None]] = []  # (end, the pass of this op or of one around it)
        for e in events:
            while stack and e["ts"] >= stack[-1][0]:
                stack.pop()
            around = stack[-1][1] if stack else None
            mine = "backward" if _conv_backward(e) else "forward" if _conv_forward(e) else None
            here = around or mine  # the outermost conv op decides (a backward may call a forward-named op)
            if e["cat"] in ("cuda_runtime", "runtime", "cuda_driver") and here and in_steps(e):
                corr = e["args"].get("correlation")
                if corr is not None:
                    enclosing[corr] = here
            stack.append((e["ts"] + e["dur"], here))
    passes = {}
    for k in kernels:
        found = enclosing.get(k["args"].get("correlation"))
        if found:
            passes[id(k)] = "conversion" if CONVERSION.search(str(k.get("name"))) else found
    return passes


def _union(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e["dur"] > 0):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _idle(device: list[dict[str, Any]], steps: list[tuple[float, float]]) -> float:
    """Summed over the steps: span less busy time, on the device with the most busy time in the steps."""
    by_device: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in device:
        by_device[e["args"].get("device", e.get("pid"))].append(e)
    best = None
    for events in by_device.values():
        busy = _length(_intersect(_union(events), steps))
        if best is None or busy > best:
            best = busy
    return sum(end - start for start, end in steps) - (best or 0.0)


# ---- convdoctor's figures, from its report.json -------------------------------------------------------------

QUANTITIES = ("steps", "step_ms", "kernel_ms", "conv_fwd_ms", "conv_bwd_ms", "conversion_ms", "nccl_ms",
              "overlap_ms", "idle_ms", "rank")


def convdoctor_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The oracle's quantities as convdoctor's report.json gives them."""
    summary = report["summary"]
    layers = report["layers"]
    device = summary["time_basis"] == "device"  # else the layers' times are host times: not the oracle's
    gpu = summary.get("gpu") or {}
    return {
        "steps": report["workload"]["steps"],
        "step_ms": summary["step_time_ms"],
        "kernel_ms": gpu.get("kernel_ms"),
        "conv_fwd_ms": float(sum(layer["forward_ms"] for layer in layers)) if device else None,
        "conv_bwd_ms": float(sum(layer["backward_ms"] for layer in layers)) if device else None,
        "conversion_ms": summary["conversion_time_ms"] if device else None,
        "nccl_ms": _device_comm(summary, "nccl_kernel_ms"),
        "overlap_ms": _device_comm(summary, "overlap_ms"),
        "steps_from": summary.get("steps_from"),
        "idle_ms": gpu.get("idle_ms"),
        "rank": summary.get("rank"),
        "notes": summary.get("notes", []),
    }


def _device_comm(summary: dict[str, Any], key: str) -> float | None:
    """A device-basis communication figure; 0 without collectives; None on a GPU-less trace (CPU collectives are
    host intervals: not the oracle's NCCL kernels)."""
    comm = summary.get("communication")
    if comm is None or comm["time_basis"] != "device":  # no collective, or collectives seen only on the host
        return 0.0 if summary["time_basis"] == "device" or summary.get("gpu") else None
    return comm[key]


TOTALS = ("conv_fwd_ms", "conv_bwd_ms", "conversion_ms", "rank")  # compared as totals where the steps differ


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, bool | None]:
    """Per quantity: agreement within 1%; None where not comparable. Where convdoctor found iterations in a trace
    that marks no ProfilerStep (the oracle takes the whole trace as one step), the conv figures are compared as
    totals over the trace (per step x steps), and the per-step figures not at all."""
    if theirs["steps"] == ours["steps"]:
        return {q: agrees(ours[q], theirs[q]) for q in QUANTITIES}
    result: dict[str, bool | None] = {q: None for q in QUANTITIES}
    def total(figures: dict, q: str) -> object:
        return figures[q] * figures["steps"] if isinstance(figures[q], float) else figures[q]

    for q in TOTALS:
        result[q] = agrees(total(ours, q), total(theirs, q))
    return result


def convdoctor_report(path: Path) -> dict[str, Any] | str:
    """convdoctor's report.json for one trace (its CLI, in a temporary out dir); the error line when it fails."""
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([sys.executable, "-m", "convdoctor", "analyze", str(path), "--out", out],
                             capture_output=True, text=True)
        report = Path(out) / "report.json"
        if run.returncode != 0 or not report.is_file():
            return (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]
        return json.loads(report.read_text())


def agrees(ours: Any, theirs: Any, tolerance: float = 0.01) -> bool:
    """Equal, or within ``tolerance`` of each other (relative), or both below 1 µs."""
    if ours is None or theirs is None:
        return ours is theirs
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)):
        return abs(ours - theirs) <= max(tolerance * max(abs(ours), abs(theirs)), 1e-3)
    return ours == theirs


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) >= 1 or value == 0 else f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("traces", nargs="*", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the side-by-side tables here")
    parser.add_argument("--hta", type=Path, help="HTA's figures (benchmarks/hta_compare.py's output) to add")
    args = parser.parse_args(argv)
    if args.traces:
        items = [(str(p), p) for p in args.traces]
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from fetch_corpus import cached

        items = [(entry.label, path) for entry, path in cached()]
    hta = json.loads(args.hta.read_text()) if args.hta else {}
    rows, agree, total, hta_rows = [], 0, 0, []
    for label, path in items:
        try:
            ours = oracle(path)
        except (OSError, ValueError) as exc:
            rows.append((label, None, f"oracle cannot read it: {exc}"))
            continue
        report = convdoctor_report(path)
        theirs = convdoctor_figures(report) if isinstance(report, dict) else report
        rows.append((label, ours, theirs))
        if str(path) in hta:
            hta_rows.append((label, hta[str(path)], ours, theirs))
        if isinstance(theirs, dict):
            verdicts = [v for v in compare(ours, theirs).values() if v is not None]
            total += len(verdicts)
            agree += sum(verdicts)
        print(label, file=sys.stderr)
    text = _markdown(rows, agree, total, argv) + _hta_markdown(hta_rows)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    return 0


DEFINITIONS = """\
## Definitions

The oracle's are in `benchmarks/oracle.py`'s docstring: plain `json`/`gzip`, none of convdoctor's code. Where
convdoctor's differ on purpose:

- **steps** — a trace that marks no `ProfilerStep#N`: the oracle takes the whole traced span as one step;
  convdoctor looks for the period over which the conv calls repeat (op, input and weight shapes, the operators run
  between them) and, finding one of at least two iterations, takes a step from one iteration's first conv call to
  the next one's, the last to the trace's end (`summary.steps_from` = `repeating conv calls`, and a note). Per-step
  figures then differ by design; the conv figures are compared as totals over the trace.
- **conv time on a trace without device events** (CPU runs, CUPTI range profiling): convdoctor's layer times are the
  host operators' durations (`time_basis` host, and a note); the oracle has no device time to give (–).
- **overlap on CPU (gloo) traces**: convdoctor's is host intervals of the `gloo:*` annotations beside other
  operators; the oracle's is NCCL kernels beside other kernels only (HTA's), so it gives none (–) there.
- Same definitions, so they must agree: the conv forward/backward time is the device events (kernels and cuDNN's
  memsets) launched from inside a conv operator or a conv autograd node in a step, cuDNN's NCHW<->NHWC transposes
  excluded and counted once as conversions; autograd's `evaluate_function` wrapper (which also sums gradients of a
  tensor used twice) is not the conv's; kernel and NCCL time count the kernels starting in a step; idle is the
  step's span less the union of all device events on the busiest device; the rank is `distributedInfo.rank`.

## Per trace
"""


def _hta_markdown(rows: list[tuple[str, dict[str, Any], dict[str, Any], Any]]) -> str:
    if not rows:
        return ""
    close_rows = sum(1 for _, h, _, t in rows if "error" not in h and isinstance(t, dict) and t.get("nccl_ms")
                     and abs(100 * t["overlap_ms"] / t["nccl_ms"] - h["comm_comp_overlap_pct"]) <= 2.5)
    lines = ["", "## HTA", "", f"**HTA's overlap share within 2.5 points of convdoctor's on {close_rows} of "
             f"{len(rows)} traces.**", "",
             "HolisticTraceAnalysis 0.5.0 (`pip install holistictraceanalysis` in its own venv; "
             "`benchmarks/hta_compare.py`) on the traces with NCCL kernels: the share of communication-kernel time "
             "that "
             "overlaps computation kernels. HTA averages it over the iterations it finds on the GPU (the device-side "
             "`ProfilerStep` annotations), convdoctor and the oracle over the host `ProfilerStep` spans; HTA's kernel "
             "breakdown counts the trace's kernels in its own iterations.", "",
             "| trace | HTA overlap % | convdoctor overlap % | oracle overlap % | HTA communication ms (trace) |",
             "|---|---|---|---|---|"]
    for label, theirs_hta, ours, theirs in rows:
        if "error" in theirs_hta:
            lines.append(f"| {label} | HTA fails: {theirs_hta['error']} | | | |")
            continue
        mine = (100 * theirs["overlap_ms"] / theirs["nccl_ms"]
                if isinstance(theirs, dict) and theirs.get("nccl_ms") else None)
        oracle_pct = 100 * ours["overlap_ms"] / ours["nccl_ms"] if ours.get("nccl_ms") else None
        lines.append(f"| {label} | {theirs_hta['comm_comp_overlap_pct']:.1f} | {_cell(mine)} | {_cell(oracle_pct)} | "
                     f"{theirs_hta['communication_us'] / 1e3:.3f} |")
    return "\n".join(lines) + "\n"


def _markdown(rows: list[tuple[str, Any, Any]], agree: int, total: int, argv: list[str] | None) -> str:
    command = "python benchmarks/oracle.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# convdoctor against an oracle on public traces", "",
             f"Made by `{command.strip()}` (the corpus: `python benchmarks/fetch_corpus.py build ...`, see its "
             "docstring).", "",
             f"**{agree} of {total} compared figures agree within 1%** over {len(rows)} traces "
             "(oracle | convdoctor; – : not given, which both must say alike).", "", DEFINITIONS, ""]
    for label, ours, theirs in rows:
        lines.append(f"### {label}")
        if not isinstance(ours, dict):
            lines += ["", str(theirs), ""]
            continue
        if not isinstance(theirs, dict):
            lines += ["", f"oracle: {ours['steps']} step(s), {ours['kernels']} kernels, {ours['conv_ops']} conv ops; "
                      f"convdoctor refuses it: {theirs}", ""]
            continue
        verdicts = compare(ours, theirs)
        by_totals = theirs["steps"] != ours["steps"]
        if by_totals:
            lines += ["", f"Steps differ on purpose (convdoctor: {theirs['steps']} from {theirs['steps_from']}; "
                      "the oracle: the whole trace): conv figures compared as totals over the trace (×steps), "
                      "per-step ones not."]
        lines += ["", "| quantity | oracle | convdoctor | |", "|---|---|---|---|"]
        for q in QUANTITIES:
            mark = {True: "", False: "≠", None: "(other steps)"}[verdicts[q]]
            if by_totals and q in TOTALS and isinstance(ours[q], float) and isinstance(theirs[q], float):
                mark = f"totals {ours[q] * ours['steps']:.3f} / {theirs[q] * theirs['steps']:.3f} {mark}".rstrip()
            lines.append(f"| {q} | {_cell(ours[q])} | {_cell(theirs[q])} | {mark} |")
        if theirs["notes"]:
            lines += ["", "convdoctor's notes: " + "; ".join(theirs["notes"])]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
