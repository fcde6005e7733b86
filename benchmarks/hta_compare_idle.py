"""Idle time per stream by cause: convdoctor's (analyzer/step/idle_time.py) against HTA's own
``get_idle_time_breakdown``, on the same real traces; writes the table of benchmarks/HTA_IDLE.md.

HTA (facebookresearch/HolisticTraceAnalysis) is not a dependency of convdoctor: install it beside it to run this.

    pip install HolisticTraceAnalysis
    python benchmarks/hta_compare_idle.py [TRACE ...] [--markdown benchmarks/HTA_IDLE.md]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from convdoctor.analyzer.step.idle_time import CONSECUTIVE_KERNEL_DELAY_US, idle_time_breakdown
from convdoctor.analyzer.trace.reader import load_profile

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TRACES = ["resnet50_v100_train_fp32.pt.trace.json.gz", "recsys_a100_train_noconv.pt.trace.json.gz",
          "alexnet_a100_nosteps_noshapes.json.gz", "resnet50_a100_ddp_rank0_step5.json.gz",
          "resnet50_v100_pt18_array_step7.json.gz", "inference_excerpt_nosteps_rank1.json.gz"]
CATEGORIES = ("host_wait", "kernel_wait", "other")


def hta_idle(trace: Path) -> dict[tuple[int, str], float]:
    """HTA's idle time (µs) per (stream, category), rank 0."""
    from hta.trace_analysis import TraceAnalysis

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(trace, Path(folder) / ("rank-0.json.gz" if trace.name.endswith(".gz") else "rank-0.json"))
        analysis = TraceAnalysis(trace_dir=folder)
        frame, _ = analysis.get_idle_time_breakdown(ranks=[0], visualize=False,
                                                    consecutive_kernel_delay=int(CONSECUTIVE_KERNEL_DELAY_US))
    return {(int(row.stream), str(row.idle_category)): float(row.idle_time) for row in frame.itertuples()}


def convdoctor_idle(trace: Path) -> dict[tuple[int, str], float]:
    """convdoctor's idle time (µs) per (stream, category)."""
    idle = idle_time_breakdown(load_profile(trace))
    return {(s.stream, category): getattr(s, f"{category}_us") for s in idle.streams for category in CATEGORIES}


def rows(trace: Path) -> list[str]:
    try:
        theirs = hta_idle(trace)
    except Exception as exc:  # noqa: BLE001 (HTA's own failure is a result too)
        return [f"| {trace.name} | – | – | HTA failed: {type(exc).__name__}: {str(exc)[:80]} | | | |"]
    ours = convdoctor_idle(trace)
    lines = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        diff = "–" if a is None or b is None else f"{b - a:+.3f}"
        rel = "–" if a is None or b is None or a == 0 else f"{(b - a) / a:+.2%}"
        lines.append(f"| {trace.name} | {key[0]} | {key[1]} | {_us(a)} | {_us(b)} | {diff} | {rel} |")
    return lines


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="*", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    traces = args.traces or [DATA / name for name in TRACES]
    table = ["| trace | stream | category | HTA µs | convdoctor µs | difference µs | relative |",
             "|---|---|---|---|---|---|---|"]
    for trace in traces:
        table += rows(trace)
        print(trace.name, file=sys.stderr)
    text = "\n".join(table) + "\n"
    if args.markdown:
        marker = "<!-- table -->\n"
        page = args.markdown.read_text()
        head, _, rest = page.partition(marker)
        _, _, tail = rest.partition("<!-- end -->\n")
        args.markdown.write_text(head + marker + text + "<!-- end -->\n" + tail)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
