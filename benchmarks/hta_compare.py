"""HTA's figures for the corpus traces with NCCL kernels, for ORACLE.md: run with HolisticTraceAnalysis's own Python.

HTA (facebookresearch/HolisticTraceAnalysis) is not a dependency of convdoctor: it lives in a separate virtual
environment, and this script imports nothing of convdoctor's.

    python3 -m venv /tmp/hta-venv && /tmp/hta-venv/bin/pip install holistictraceanalysis
    /tmp/hta-venv/bin/python benchmarks/hta_compare.py TRACE... > hta.json
    python benchmarks/oracle.py --hta hta.json --markdown benchmarks/ORACLE.md

Per trace: HTA's ``get_comm_comp_overlap`` (the share of communication-kernel time that overlaps computation
kernels, per rank) and ``get_gpu_kernel_breakdown``'s communication and computation kernel time.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


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


def main(argv: list[str]) -> int:
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
