"""Sorted, disjoint time intervals (start_us, end_us): merging, intersecting, measuring."""

from __future__ import annotations

from typing import Iterable

Intervals = list[tuple[float, float]]  # sorted by start, disjoint, each of positive length


def merged(spans: Iterable[tuple[float, float]]) -> Intervals:
    """The union of ``spans`` (sorted by start or not) as sorted, disjoint intervals."""
    result: Intervals = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if result and start <= result[-1][1]:
            if end > result[-1][1]:
                result[-1] = (result[-1][0], end)
        else:
            result.append((start, end))
    return result


def intersection(a: Intervals, b: Intervals) -> Intervals:
    result: Intervals = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            result.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return result


def length(intervals: Intervals) -> float:
    return sum(end - start for start, end in intervals)
