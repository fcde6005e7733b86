"""Which of several sets of time intervals covers each instant of a span, vectorised with numpy: a set may hold tens of
thousands of events, which interval arithmetic in Python (``conv/intervals.py``) walks one at a time."""

from __future__ import annotations

import numpy as np


def union(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of the spans (``start[i]``, ``end[i]``) as the starts and ends of sorted, disjoint intervals, as
    ``intervals.merged`` makes it: empty spans are left out, touching ones merge."""
    keep = start < end
    order = np.argsort(start[keep], kind="stable")
    start, end = start[keep][order], end[keep][order]
    if not len(start):
        return start, end
    reach = np.maximum.accumulate(end)  # the end of the union so far
    gaps = np.flatnonzero(start[1:] > reach[:-1]) + 1  # the spans that start after it
    return start[np.concatenate(([0], gaps))], reach[np.concatenate((gaps - 1, [len(start) - 1]))]


def first_cover_times(sets: list[tuple[np.ndarray, np.ndarray]], spans: list[tuple[float, float]]
                      ) -> list[list[float]]:
    """For each span (start, end), the time that each set (a ``union``) covers first in ``sets`` order, then the
    time that none covers.

    The instants between two consecutive interval or span ends go to the first set that covers them. Each time adds
    up, in time order, the lengths of the maximal pieces a set takes (``np.bincount`` adds in order): the same pieces
    and the same floats as intersecting each set with what the sets before it left free, one piece at a time.
    """
    others = len(sets)
    points = np.sort(np.concatenate([np.asarray(spans, dtype=float).ravel(), *(a for s in sets for a in s)]))
    points = points[np.concatenate(([True], points[1:] != points[:-1]))]  # each once (np.unique imports numpy.ma)
    owner = np.full(len(points), others)  # of the instants from each point to the next
    for index in range(others - 1, -1, -1):  # the first set last: it overwrites the others
        starts, ends = sets[index]
        change = np.zeros(len(points), dtype=np.intp)
        change[np.searchsorted(points, starts)] = 1
        change[np.searchsorted(points, ends)] = -1
        owner[np.cumsum(change) > 0] = index
    times = []
    for start, end in spans:
        if not end > start:
            times.append([0.0] * (others + 1))
            continue
        first, last = np.searchsorted(points, [start, end])
        breaks = np.flatnonzero(owner[first + 1:last] != owner[first:last - 1]) + first + 1
        begins, ends = np.concatenate(([first], breaks)), np.concatenate((breaks, [last]))
        times.append(np.bincount(owner[begins], weights=points[ends] - points[begins], minlength=others + 1).tolist())
    return times
