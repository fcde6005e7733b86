"""Sorted, disjoint time intervals (start_us, end_us): merging, clipping to a span, intersecting and subtracting."""

from __future__ import annotations

import bisect
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


def clipped(intervals: Intervals, starts: list[float], start: float, end: float) -> Intervals:
    """The parts of ``intervals`` inside (start, end); ``starts`` is their list of starts, for bisection."""
    first = max(bisect.bisect_right(starts, start) - 1, 0)
    last = bisect.bisect_left(starts, end)
    return [(max(s, start), min(e, end)) for s, e in intervals[first:last] if e > start and s < end]


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


def difference(a: Intervals, b: Intervals) -> Intervals:
    """The parts of ``a`` outside ``b``."""
    result: Intervals = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        cursor = start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                result.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            result.append((cursor, end))
    return result


def length(intervals: Intervals) -> float:
    return sum(end - start for start, end in intervals)
