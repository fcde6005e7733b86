"""The host allocator: which one this process runs with, the page faults of its steps, and keeping glibc's heap
while convdoctor traces and measures.

glibc malloc serves large blocks (conv activations) with ``mmap`` and adapts that threshold to what the process has
freed so far (128 KiB at start, up to 32 MiB), and trims free memory at the top of its heap. Whether a step maps
its activations afresh (a page fault per 4 KiB, each page zeroed) therefore depends on the allocations before it:
the same conv measured 12 ms in one block of rounds and 32 ms in the block before, in the same process, and fresh
processes disagreed by as much (seed_grouped, eval, 2 threads). Measured speedups were partly the allocator's
state, and did not repeat. So once the page faults of the process's own allocator are counted (CD118's evidence),
``keep_heap`` fixes both thresholds for the rest of the process, and tracing and measuring run with a heap that
keeps its blocks, as CD118 advises; CD118 measures what that setting gives on its own, in worker processes
started with and without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
from typing import Any, Callable

# glibc's tunables for a process start (CD118's advice): blocks below 4 GiB stay in the heap instead of coming from
# mmap() and going back with munmap() after every step, and free memory is not trimmed back to the kernel.
KEEP_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(64 << 30)}
# The same, set in a running process with mallopt(), whose value is a C int: thresholds of 1 and 2 GiB.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
KEPT_MMAP_THRESHOLD, KEPT_TRIM_THRESHOLD = 1 << 30, 2**31 - 1


def allocator() -> str:
    """The host allocator this process runs with: a preloaded jemalloc/tcmalloc, or glibc malloc and its settings."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return f"{name} (LD_PRELOAD)"
    settings = [f"{k}={v}" for k, v in sorted(os.environ.items())
                if k.startswith("MALLOC_") or (k == "GLIBC_TUNABLES" and "malloc" in v)]
    libc = "glibc malloc" if platform.libc_ver()[0] == "glibc" else "the system malloc"
    return f"{libc} ({', '.join(settings) if settings else 'defaults'})"


def minor_page_faults() -> int:
    """Minor page faults of this process so far: each is a fresh page the kernel had to map (and zero)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def faults_per_step(step: Callable[[], Any], steps: int) -> int:
    """The minor page faults of one step: the mean over ``steps`` steps (run them warm)."""
    before = minor_page_faults()
    for _ in range(steps):
        step()
    return (minor_page_faults() - before) // max(steps, 1)


_kept = False  # keep_heap() fixed the thresholds of this process: they stay fixed until it ends


def keep_heap() -> bool:
    """Fix glibc malloc's mmap and trim thresholds in this process (``mallopt``), so that freed blocks up to 1 GiB
    are reused instead of mapped afresh; True when they are fixed (now or by an earlier call).

    Only for glibc malloc with its defaults: a preloaded allocator, or glibc with the user's own settings, is left
    as it is (False). The process keeps its peak heap from then on.
    """
    global _kept
    if not _kept and allocator() == "glibc malloc (defaults)":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _kept = bool(libc.mallopt(M_MMAP_THRESHOLD, KEPT_MMAP_THRESHOLD)
                         and libc.mallopt(M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD))
        except (OSError, AttributeError):  # no C library to load, or one without mallopt
            pass
    return _kept


def heap_kept() -> bool:
    """Whether ``keep_heap`` fixed this process's thresholds: its page faults are then no longer its allocator's."""
    return _kept
