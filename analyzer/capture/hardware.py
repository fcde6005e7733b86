"""The device a workload runs on: its name, and the peaks to record in its traces for a roofline.

A CPU's peaks are measured here at capture time (a float32 matmul and a large copy, best of a few); a GPU's come
from NVIDIA's datasheets (``conv.peaks``), looked up by the device's name.
"""

from __future__ import annotations

import platform
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convdoctor.analyzer.capture.contention import QuietPolicy, contended, cpu_jiffies, other_cores_busy
from convdoctor.analyzer.conv.peaks import (
    Peaks,
    PeaksSource,
    datasheet_peaks,
    unknown_peaks,
)

if TYPE_CHECKING:
    import torch


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------------------ CPU: low precision

# /proc/cpuinfo flags that mean the CPU computes bfloat16/float16 dot products natively (x86 "flags", Arm "Features").
LOW_PRECISION_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "amx_fp16", "avx_vnni", "bf16", "fphp",
                       "asimdhp", "sve")


def cpu_flags() -> frozenset[str] | None:
    """The feature flags of the first CPU in /proc/cpuinfo (x86 ``flags``, Arm ``Features``); None without it."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def low_precision_environment() -> dict[str, Any]:
    """What decides whether bfloat16/float16 convolutions run natively on this CPU, for a capture's environment.

    ``mkldnn_bf16_supported``/``mkldnn_fp16_supported``: torch's own checks (``torch.ops.mkldnn._is_mkldnn_*``), which
    decide whether a bfloat16/float16 conv goes to oneDNN at all (else to ATen's reference ``thnn_conv2d``).
    ``cpu_low_precision_flags``: the flags of LOW_PRECISION_FLAGS that /proc/cpuinfo lists, space-separated ("" when
    none; None where there is no /proc/cpuinfo): the torch check is true on any AVX-512 CPU, where oneDNN emulates
    bfloat16 without avx512_bf16 or amx_bf16.
    """
    import torch

    def check(name: str) -> bool | None:
        probe = getattr(torch.ops.mkldnn, name, None)
        try:
            return bool(probe()) if probe is not None else None
        except RuntimeError:
            return None

    flags = cpu_flags()
    return {
        "mkldnn_bf16_supported": check("_is_mkldnn_bf16_supported"),
        "mkldnn_fp16_supported": check("_is_mkldnn_fp16_supported"),
        "cpu_low_precision_flags": None if flags is None else " ".join(f for f in LOW_PRECISION_FLAGS if f in flags),
    }


# ------------------------------------------------------------------------------------------------ CPU: measured

MATMUL_SIZE = 1024  # float32 1024x1024 @ 1024x1024: 2.1 GFLOP, tens of ms on a few cores
COPY_BYTES = 256 * 2**20  # well past any last-level cache
MATMUL_BUDGET_S, COPY_BUDGET_S = 0.4, 0.3  # best of as many runs as fit (3 at least, 30 at most)


@lru_cache(maxsize=None)
def _measured_cpu_peaks(threads: int) -> tuple[float, float, int, int, float | None]:
    """(FLOP/s, bytes/s, matmul runs, copy runs, other processes' busy cores meanwhile): the best run of torch.mm
    and of a 256 MB copy on ``threads`` threads. The best, not the median: other processes only ever slow a run
    down."""
    import torch

    started, before = time.perf_counter(), cpu_jiffies()

    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    out = torch.empty(MATMUL_SIZE, MATMUL_SIZE)
    torch.mm(a, b, out=out)  # first call: BLAS/oneDNN set-up, not timed
    mm_runs = _best_runs(lambda: torch.mm(a, b, out=out), MATMUL_BUDGET_S)
    source = torch.ones(COPY_BYTES // 4)
    target = torch.zeros(COPY_BYTES // 4)  # both written once, so the timed copies touch no fresh pages
    copy_runs = _best_runs(lambda: target.copy_(source), COPY_BUDGET_S)
    busy = other_cores_busy(before, cpu_jiffies(), time.perf_counter() - started)
    # A copy reads and writes every byte: 2 × its size moved (as STREAM counts its copy kernel).
    return 2 * MATMUL_SIZE**3 / min(mm_runs), 2 * COPY_BYTES / min(copy_runs), len(mm_runs), len(copy_runs), busy


def _best_runs(work: Any, budget_s: float, least: int = 3, most: int = 30) -> list[float]:
    """Durations of runs of ``work``: at least ``least``, then more while ``budget_s`` lasts."""
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < least or (len(durations) < most and time.perf_counter() - started < budget_s):
        begin = time.perf_counter()
        work()
        durations.append(max(time.perf_counter() - begin, 1e-9))
    return durations


def cpu_peaks(quiet: QuietPolicy | None = None) -> Peaks:
    """This machine's float32 roofs, measured once per process and thread count (about 1 s), under the run's
    rule for busy machines (``quiet``): measured again after a wait for quiet when other processes kept the cores
    busy; when they still did, ``others_busy`` says how busy.

    Compute roof: the best FLOP/s of a 1024x1024 float32 torch.mm on torch.get_num_threads() threads (the practical
    oneDNN/BLAS roof, not the vector units' theoretical peak). Bandwidth roof: the best of a 256 MB tensor copy,
    counting the bytes read and written (as STREAM's copy does).
    """
    import torch

    threads = torch.get_num_threads()
    flops, bandwidth, mm_runs, copy_runs, busy = _measured_cpu_peaks(threads)
    if quiet is not None and quiet.note_block(busy) and quiet.wait_for_quiet("measuring the roofline's roofs"):
        _measured_cpu_peaks.cache_clear()
        flops, bandwidth, mm_runs, copy_runs, busy = _measured_cpu_peaks(threads)
    return Peaks(flops, bandwidth, PeaksSource.MEASURED,
                 f"measured at capture on {threads} thread{'' if threads == 1 else 's'}: the best of {mm_runs} float32 "
                 f"{MATMUL_SIZE}x{MATMUL_SIZE} matmuls and of {copy_runs} {COPY_BYTES >> 20} MB copies",
                 others_busy=busy if contended(busy, threads) else None)



def recorded_peaks(device: torch.device, dtype: str, quiet: QuietPolicy | None = None) -> Peaks:
    """The peaks to record in a capture's environment: measured on a CPU, from the datasheet on a GPU."""
    import torch

    if device.type == "cpu":  # measured in float32 only: the roofline of other dtypes is left out
        in_float32 = dtype in ("float32", "unknown")
        peaks = cpu_peaks(quiet) if in_float32 else unknown_peaks(f"no CPU peaks for {dtype}", dtype)
    else:
        peaks = datasheet_peaks(device_name(device), dtype, torch.backends.cudnn.allow_tf32)
    return peaks


