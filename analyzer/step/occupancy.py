"""A kernel's estimated occupancy from its launch record and the device's limits, computed as Kineto does
(libkineto/src/DeviceProperties.cpp ``kernelOccupancy``) for traces whose kernels lack ``est. achieved occupancy %``:
the blocks of the kernel that fit on one SM (threads, registers and shared memory per SM, and the architecture's
block limit), capped by the grid's blocks per SM, times its warps per block, over the SM's warps. (Kineto's own
estimate is 0 for kernels with more than 48 KiB of shared memory per block: its calculator does not opt in to more;
this one counts them.)"""

from __future__ import annotations

import math
from typing import Any

from convdoctor.analyzer.trace.profile import Kernel

# Most resident blocks per SM by compute capability (CUDA C Programming Guide, "Compute Capabilities" table).
MAX_BLOCKS_PER_SM = {(6, 0): 32, (6, 1): 32, (6, 2): 32, (7, 0): 32, (7, 2): 32, (7, 5): 16, (8, 0): 32, (8, 6): 16,
                     (8, 7): 16, (8, 9): 24, (9, 0): 32}
REGISTER_UNIT = 256  # registers are allocated per warp in units of 256


def computed_occupancy_pct(kernel: Kernel, device: dict[str, Any]) -> float | None:
    """Estimated occupancy in % (0..100), or None where the trace lacks the launch record or the device's limits."""
    threads, registers, shared = kernel.threads_per_block, kernel.registers_per_thread, kernel.shared_memory_bytes
    try:
        warp = int(device["warpSize"])
        max_warps = int(device["maxThreadsPerMultiprocessor"]) // warp
        sm_registers = int(device["regsPerMultiprocessor"])
        sm_shared = int(device["sharedMemPerMultiprocessor"])
        sms = int(device["numSms"])
        max_blocks = MAX_BLOCKS_PER_SM[(int(device["computeMajor"]), int(device["computeMinor"]))]
    except (KeyError, TypeError, ValueError):
        return None
    if threads is None or registers is None or shared is None or kernel.grid is None or not warp or not sms:
        return None
    warps = math.ceil(threads / warp)
    limits = [max_blocks, max_warps // warps]
    if registers:
        limits.append(sm_registers // (math.ceil(registers * warp / REGISTER_UNIT) * REGISTER_UNIT) // warps)
    if shared:
        limits.append(sm_shared // shared)
    grid_blocks = kernel.grid[0] * kernel.grid[1] * kernel.grid[2]
    blocks = min(min(limits), grid_blocks / sms)
    return 100.0 * blocks * warps / max_warps if max_warps else None
