"""A busy-loop process for the contention tests: spins one core until killed (or for SECONDS, when given)."""

import sys
import time

deadline = time.monotonic() + float(sys.argv[1]) if len(sys.argv) > 1 else float("inf")
while time.monotonic() < deadline:
    pass
