"""Check that `convdoctor analyze` reports the same before and after a change: two report.json files, equal apart
from where the traces were (``trace_files``, ``logdir``).

    python -m convdoctor analyze TRACE --out before --format json     # at the old commit
    python -m convdoctor analyze TRACE --out after --format json      # at the new one
    python benchmarks/same_report.py before/report.json after/report.json

Prints each difference (up to 30) and exits 1 when there is one; 0 when the reports are the same.
"""

from __future__ import annotations

import json
import sys
from typing import Any

LOCATION_KEYS = frozenset({"trace_files", "logdir"})  # where the traces were: not the analysis


def differences(before: Any, after: Any, where: str = "$") -> list[str]:
    """Where two JSON values differ, as paths with both values; numbers compare exactly."""
    if type(before) is not type(after):
        return [f"{where}: {before!r} -> {after!r}"]
    if isinstance(before, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if where == "$" and key in LOCATION_KEYS:
                continue
            if key not in before or key not in after:
                found.append(f"{where}.{key}: {before.get(key, '<absent>')!r} -> {after.get(key, '<absent>')!r}")
            else:
                found += differences(before[key], after[key], f"{where}.{key}")
        return found
    if isinstance(before, list):
        found = [f"{where}: {len(before)} items -> {len(after)}"] if len(before) != len(after) else []
        for index, (a, b) in enumerate(zip(before, after)):
            found += differences(a, b, f"{where}[{index}]")
        return found
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    before, after = (json.loads(open(path, encoding="utf-8").read()) for path in sys.argv[1:])
    found = differences(before, after)
    for line in found[:30]:
        print(line[:300])
    print(f"{len(found)} difference(s)" if found else "the same report")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
