"""HTA's figures for the corpus traces with NCCL kernels, for ORACLE.md: run with HolisticTraceAnalysis's own Python.

HTA (facebookresearch/HolisticTraceAnalysis) is not a dependency of convdoctor: it lives in a separate virtual
environment, and this script imports nothing of convdoctor's.

    python3 -m venv /tmp/hta-venv && /tmp/hta-venv/bin/pip install holistictraceanalysis
    /tmp/hta-venv/bin/python benchmarks/hta_compare.py TRACE... > hta.json
    python benchmarks/oracle.py --hta hta.json --markdown benchmarks/ORACLE.md

Per trace: HTA's ``get_comm_comp_overlap`` (the share of communication-kernel time that overlaps computation
kernels, per rank) and ``get_gpu_kernel_breakdown``'s communication and computation kernel time.

``--views`` compares the whole-step views instead (report.json's ``kernels`` and ``overview``, read from a
`convdoctor analyze --format json` run in a subprocess) with HTA's kernel breakdown (every kernel: duration_ratio 1)
and temporal breakdown, and writes the table of benchmarks/HTA_COMPARE.md (HTA and convdoctor in one environment:
``pip install HolisticTraceAnalysis`` beside convdoctor):

    python benchmarks/hta_compare.py --views TRACE... > benchmarks/HTA_COMPARE.md
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TOP_KERNELS = 3  # kernels per trace compared by name


def hta_figures(trace: Path) -> dict[str, object]:
    from hta.trace_analysis import TraceAnalysis

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(trace, Path(folder) / ("rank-0.json.gz" if trace.name.endswith(".gz") else "rank-0.json"))
        analysis = TraceAnalysis(trace_dir=folder)
        overlap = analysis.get_comm_comp_overlap(visualize=False)
        kinds, _ = analysis.get_gpu_kernel_breakdown(visualize=False)
    sums = dict(zip(kinds["kernel_type"], kinds["sum"]))
    return {
        "comm_comp_overlap_pct": float(overlap["comp_comm_overlap_pctg"].iloc[0]),
        "communication_us": float(sum(v for k, v in sums.items() if "COMMUNICATION" in k)),
        "computation_us": float(sum(v for k, v in sums.items() if "COMPUTATION" in k)),
    }


def hta_views(trace: Path) -> dict[str, Any]:
    """HTA's every-kernel breakdown (per name: sum, mean, min, max, calls) and temporal breakdown of rank 0."""
    from hta.trace_analysis import TraceAnalysis

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(trace, Path(folder) / ("rank-0.json.gz" if trace.name.endswith(".gz") else "rank-0.json"))
        analysis = TraceAnalysis(trace_dir=folder)
        kinds, per_kernel = analysis.get_gpu_kernel_breakdown(visualize=False, duration_ratio=1.0,
                                                              num_kernels=1_000_000, include_memory_kernels=False)
        temporal = analysis.get_temporal_breakdown(visualize=False)
    by_name: dict[str, dict[str, float]] = {}
    for row in per_kernel.to_dict("records"):
        by_name[row["name"]] = {key: float(row[f"{key} (us)"]) for key in ("sum", "mean", "min", "max")}
    first = temporal.to_dict("records")[0]
    del kinds  # its rows split overlapping time out: the per-kernel sums are the comparable figure
    return {"kernels": by_name, "kernel_sum_us": sum(k["sum"] for k in by_name.values()),
            "idle_us": float(first["idle_time(us)"]), "kernel_time_us": float(first["kernel_time(us)"]),
            "compute_us": float(first["compute_time(us)"]), "non_compute_us": float(first["non_compute_time(us)"])}


def convdoctor_views(trace: Path) -> dict[str, Any]:
    """report.json of `convdoctor analyze TRACE`, run as a user would (a subprocess: nothing of convdoctor here)."""
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-m", "convdoctor", "analyze", str(trace), "--format", "json",
                                 "--out", out], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def views_markdown(traces: list[Path]) -> str:
    lines = ["# convdoctor's whole-step views against Holistic Trace Analysis", "",
             "Made by `python benchmarks/hta_compare.py --views " + " ".join(t.name for t in traces) + "` (HTA "
             "from `pip install HolisticTraceAnalysis`, in convdoctor's environment). Times in ms, over the whole "
             "trace unless the quantity says per step.", "",
             "| quantity | trace | convdoctor | HTA | difference | why |", "|---|---|---|---|---|---|"]
    for trace in traces:
        ours, theirs = convdoctor_views(trace), hta_views(trace)
        rows = ours["kernels"]["rows"]
        name = trace.name.split(".")[0]
        lines.append(_row("all kernels' time", name, ours["kernels"]["total_ms"], theirs["kernel_sum_us"] / 1e3,
                          "the same sum (HTA: its per-kernel sums, memory kernels left out, in whole µs)"))
        for row in rows[:TOP_KERNELS]:
            hta = theirs["kernels"].get(row["name"])
            label = row["name"][:40].replace("|", "\\|")
            for field in ("total", "mean", "max"):
                value = None if hta is None else hta["sum" if field == "total" else field] / 1e3
                lines.append(_row(f"`{label}` {field}", name, row[f"{field}_ms"], value,
                                  "the same kernel, by name" if hta else "HTA groups it under another name"))
        gpu = ours["overview"]["gpu"]
        steps_ms = sum(s["span_ms"] for s in ours["overview"]["steps"])
        span = theirs["kernel_time_us"] + theirs["idle_us"]
        lines.append(_row("GPU utilization %", name, 100 * gpu["utilization"], 100 * theirs["compute_us"] / span
                          if span else None, f"convdoctor: kernel time within the {len(ours['overview']['steps'])} "
                          f"ProfilerStep spans ({steps_ms:.1f} ms, tb-profiler's definition); HTA: compute kernels "
                          f"over the rank's whole GPU span ({span / 1e3:.1f} ms), memcpy/memset as non-compute"))
    return "\n".join(lines) + "\n"


def _row(quantity: str, trace: str, ours: float, theirs: float | None, why: str) -> str:
    if theirs is None:
        return f"| {quantity} | {trace} | {ours:.3f} | – | – | {why} |"
    diff = ours - theirs
    relative = f" ({100 * diff / theirs:+.2f}%)" if theirs else ""
    return f"| {quantity} | {trace} | {ours:.3f} | {theirs:.3f} | {diff:+.3f}{relative} | {why} |"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--views"]:
        print(views_markdown([Path(name) for name in argv[1:]]), end="")
        return 0
    results = {}
    for name in argv:
        try:
            results[name] = hta_figures(Path(name))
        except Exception as exc:  # noqa: BLE001 (HTA's own failures are a result too)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        print(name, results[name], file=sys.stderr)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
