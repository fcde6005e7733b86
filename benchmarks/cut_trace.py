"""Cut a real trace down to one profiled step, for a small test fixture (tests/data/SOURCES.md says which).

Kept, unchanged: the top-level values other than the events; the metadata (``ph`` M) events; every event that starts
inside the step's span (the host ``ProfilerStep#N`` event, or ``--start``/``--end`` in µs) and the device events
launched by a kept runtime call even when they start after the span, except flow events (``ph`` s, t, f: the arrows
a viewer draws between a launch and its kernel, a quarter of a trace's bytes, read by neither convdoctor nor the
oracle). Nothing else is edited: a kept event is the trace's own JSON object, written back in the trace's form
(object or array) and gzipped.

    python benchmarks/cut_trace.py SOURCE OUT.json.gz --step ProfilerStep#5
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any


def cut(data: Any, start: float, end: float) -> Any:
    events = data if isinstance(data, list) else data["traceEvents"]

    def inside(e: dict[str, Any]) -> bool:
        ts = e.get("ts")
        return isinstance(ts, (int, float)) and start <= float(ts) < end

    runtime = {"cuda_runtime", "runtime", "cuda_driver"}
    launched = {e.get("args", {}).get("correlation") for e in events
                if isinstance(e, dict) and str(e.get("cat", "")).lower() in runtime and inside(e)}
    launched.discard(None)
    kept = [e for e in events if isinstance(e, dict) and (
        e.get("ph") == "M" or (e.get("ph") not in ("s", "t", "f")
                               and (inside(e) or (e.get("args") or {}).get("correlation") in launched)))]
    if isinstance(data, list):
        return kept
    return {**data, "traceEvents": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--step", help="the ProfilerStep#N event whose span to keep")
    parser.add_argument("--start", type=float)
    parser.add_argument("--end", type=float)
    args = parser.parse_args(argv)
    raw = args.source.read_bytes()
    data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    events = data if isinstance(data, list) else data["traceEvents"]
    if args.step:
        step = next(e for e in events if isinstance(e, dict) and e.get("name") == args.step and e.get("ph") == "X"
                    and str(e.get("cat", "")).lower() in ("cpu_op", "operator", "user_annotation"))
        start, end = float(step["ts"]), float(step["ts"]) + float(step["dur"])
    else:
        start, end = args.start, args.end
    text = json.dumps(cut(data, start, end), separators=(",", ":"))
    args.out.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    print(f"{args.out}: {args.out.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
