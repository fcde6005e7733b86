"""The whole-step views computed again from a trace's raw JSON events, with plain json/gzip and nothing of
convdoctor's analyzer: the oracle of tests/step/. Each function writes its definition out in its own way (a sweep
over boundaries where convdoctor merges and subtracts intervals; an explicit stack where convdoctor reads its
nesting), so that a disagreement is a bug on one side."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

CATEGORY = {"cpu_op": "op", "operator": "op", "user_annotation": "annotation", "python_function": "python",
            "cuda_runtime": "runtime", "runtime": "runtime", "cuda_driver": "runtime", "kernel": "kernel",
            "gpu_memcpy": "memcpy", "memcpy": "memcpy", "gpu_memset": "memset", "memset": "memset"}
HOST = ("op", "annotation", "python", "runtime")
DEVICE = ("kernel", "memcpy", "memset")
PRIORITY = ("kernel", "memcpy", "memset", "runtime", "data loader", "cpu execution")


class Raw:
    """A trace's complete events ("X"), each with its kind (CATEGORY's values) under "kind"."""

    def __init__(self, path: Path) -> None:
        data = json.loads(gzip.decompress(path.read_bytes()))
        events = data["traceEvents"] if isinstance(data, dict) else data
        self.properties = data.get("deviceProperties", []) if isinstance(data, dict) else []
        self.events = []
        for e in events:
            kind = CATEGORY.get(str(e.get("cat", "")).lower())
            if e.get("ph") == "X" and kind is not None and "dur" in e:
                self.events.append({**e, "kind": kind, "ts": float(e["ts"]), "dur": float(e["dur"])})
        self.steps = sorted((e["ts"], e["ts"] + e["dur"]) for e in self.events
                            if e["kind"] in ("op", "annotation") and e["name"].startswith("ProfilerStep#"))
        self.parent = self._nest()

    def _nest(self) -> dict[int, dict[str, Any] | None]:
        """The innermost host event around each host event of its thread (id(event) -> parent), by a stack."""
        parent: dict[int, dict[str, Any] | None] = {}
        threads: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
        for e in self.events:
            if e["kind"] in HOST:
                threads[(e.get("pid"), e.get("tid"))].append(e)
        for host in threads.values():
            host.sort(key=lambda e: (e["ts"], -e["dur"]))
            stack: list[dict[str, Any]] = []
            for e in host:
                while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                    stack.pop()
                parent[id(e)] = stack[-1] if stack else None
                stack.append(e)
        return parent

    def launcher(self, device_event: dict[str, Any]) -> dict[str, Any] | None:
        """The innermost cpu_op around the runtime call with the device event's correlation id."""
        runtime = self.runtime_by_correlation.get(device_event.get("args", {}).get("correlation"))
        node = self.parent.get(id(runtime)) if runtime is not None else None
        while node is not None and node["kind"] != "op":
            node = self.parent.get(id(node))
        return node

    @property
    def runtime_by_correlation(self) -> dict[Any, dict[str, Any]]:
        if not hasattr(self, "_runtime"):
            self._runtime = {e.get("args", {}).get("correlation"): e for e in self.events if e["kind"] == "runtime"}
        return self._runtime


def part_of(e: dict[str, Any]) -> str | None:
    name = e["name"]
    if e["kind"] in DEVICE or e["kind"] == "runtime":
        return e["kind"]
    if e["kind"] in ("op", "annotation") and ((name.startswith("enumerate(DataLoader)#") and name.endswith(
            ".__next__")) or name.startswith("enumerate(DataPipe)#")):
        return "data loader"
    if e["kind"] in ("op", "annotation") and not name.startswith("ProfilerStep#"):
        return "cpu execution"
    return None


def breakdown(raw: Raw, step: tuple[float, float]) -> dict[str, float]:
    """Each part's time in the step: a sweep over every boundary, each piece going to the first part running."""
    start, end = step
    marks = []
    for e in raw.events:
        part = part_of(e)
        a, b = max(e["ts"], start), min(e["ts"] + e["dur"], end)
        if part is not None and a < b:
            marks += [(a, 1, part), (b, -1, part)]
    marks.sort(key=lambda m: m[0])
    running = dict.fromkeys(PRIORITY, 0)
    times = dict.fromkeys((*PRIORITY, "other"), 0.0)
    cursor = start
    for when, change, part in marks + [(end, 0, None)]:
        first = next((p for p in PRIORITY if running[p] > 0), "other")
        times[first] += when - cursor
        cursor = when
        if part is not None:
            running[part] += change
    return times


def operators(raw: Raw, by_shape: bool = False) -> dict[Any, dict[str, float]]:
    """Per operator name (or name and input dims): calls, host self and total, device self and total."""
    table: dict[Any, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    children: dict[int, float] = defaultdict(float)
    for e in raw.events:
        p = raw.parent.get(id(e))
        if p is not None:
            children[id(p)] += e["dur"]
    device_self: dict[int, float] = defaultdict(float)
    device_total: dict[int, float] = defaultdict(float)
    for d in raw.events:
        if d["kind"] in DEVICE:
            node = raw.launcher(d)
            if node is not None:
                device_self[id(node)] += d["dur"]
            while node is not None:
                if node["kind"] == "op":
                    device_total[id(node)] += d["dur"]
                node = raw.parent.get(id(node))
    for e in raw.events:
        if e["kind"] != "op" or e["name"].startswith("ProfilerStep#"):
            continue
        key = (e["name"], str(e.get("args", {}).get("Input Dims", e.get("args", {}).get("Input dims", []))))
        row = table[key if by_shape else e["name"]]
        row["calls"] += 1
        row["host_total"] += e["dur"]
        row["host_self"] += e["dur"] - children[id(e)]
        row["device_self"] += device_self[id(e)]
        row["device_total"] += device_total[id(e)]
    return table


def kernels(raw: Raw) -> dict[str, dict[str, Any]]:
    """Per kernel name: calls, total, min, max, duration-weighted blocks per SM and occupancy, launchers' time."""
    table: dict[str, dict[str, Any]] = {}
    for k in raw.events:
        if k["kind"] != "kernel":
            continue
        row = table.setdefault(k["name"], {"calls": 0, "total": 0.0, "min": float("inf"), "max": 0.0,
                                           "bps": [0.0, 0.0], "occ": [0.0, 0.0], "launchers": defaultdict(float)})
        row["calls"] += 1
        row["total"] += k["dur"]
        row["min"], row["max"] = min(row["min"], k["dur"]), max(row["max"], k["dur"])
        args = k.get("args", {})
        for key, arg in (("bps", "blocks per SM"), ("occ", "est. achieved occupancy %")):
            value = args.get(arg)
            if isinstance(value, (int, float)) and value >= 0 and value != float("inf"):
                row[key][0] += value * k["dur"]
                row[key][1] += k["dur"]
        node = raw.launcher(k)
        if node is not None:
            row["launchers"][node["name"]] += k["dur"]
    return table


def kernel_pieces(raw: Raw, device: int) -> list[tuple[float, float, dict[str, Any]]]:
    """The device's kernels clipped to the steps: (start, end, event)."""
    pieces = []
    for k in raw.events:
        if k["kind"] == "kernel" and k.get("args", {}).get("device") == device:
            for s, e in raw.steps:
                a, b = max(k["ts"], s), min(k["ts"] + k["dur"], e)
                if a < b:
                    pieces.append((a, b, k))
    return pieces


def covered(pieces: list[tuple[float, float, dict[str, Any]]], value: Any = None) -> float:
    """The time at least one piece runs (``value`` None), or the integral of min(1, the sum of ``value(event)`` over
    the pieces running), found piece of time by piece of time between consecutive boundaries."""
    bounds = sorted({t for a, b, _ in pieces for t in (a, b)})
    by_start = sorted(pieces, key=lambda p: p[0])
    total, active, i = 0.0, [], 0
    for left, right in zip(bounds, bounds[1:]):
        while i < len(by_start) and by_start[i][0] <= left:
            active.append(by_start[i])
            i += 1
        active = [p for p in active if p[1] > left]
        running = [p for p in active if p[0] <= left < p[1]]
        if value is None:
            total += (right - left) if running else 0.0
        else:
            total += min(1.0, sum(value(p[2]) for p in running)) * (right - left)
    return total
