"""A busy-loop process for the contention tests and benchmarks: spins one core until killed, or for SECONDS, busy
for DUTY of every 50 ms (1: all of it).

    python busy_loop.py [SECONDS [DUTY]]
"""

import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else float("inf")
duty = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    busy_until = time.monotonic() + 0.05 * duty
    while time.monotonic() < busy_until:
        pass
    if duty < 1.0:
        time.sleep(0.05 * (1.0 - duty))
