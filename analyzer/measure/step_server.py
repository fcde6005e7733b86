"""A worker process that loads a model file, warms it up, and times steps on request.

Started by ``environment_trial`` once per variant, so that two variants can differ in what only a process start can
set (allocator environment variables, LD_PRELOAD). It loads the model file and says so (both variants of a block
load at once), then waits for a first line on stdin, ``warm N``, before its first step and N warm-up steps (one
variant at a time).
Then commands arrive on stdin, one number per line: N > 0 times N steps, 0 ends. Replies go to the file descriptor
given on the command line, one JSON object per line, so that what the user's model prints cannot mix with them.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from typing import Any

import torch

from convdoctor.analyzer.capture.workload import (
    describe_exception,
    flat_tensors,
    load_workload,
    make_step,
    time_step,
)

COMPARED_VALUES = 4096  # the first values of the first step's outputs, sent back for the numerics check


def serve(request: dict[str, Any], reply: Any) -> None:
    """Load the workload the request names and say so; when told, warm it up and report readiness; then time
    steps until told to stop."""
    torch.manual_seed(0)  # both variants build the same weights and inputs from a model file that draws them
    workload = load_workload(request["model_file"], device=request["device"], mode=request["mode"],
                             batch_size=request["batch_size"])
    step = make_step(workload)
    _send(reply, {"loaded": True})
    warm = sys.stdin.readline().split()  # "warm N": the first step, then N steps
    if not warm:
        return
    started = time.perf_counter()
    output = step()
    first_step_s = time.perf_counter() - started
    values = [float(v) for t in flat_tensors(output) if t.is_floating_point()
              for v in t.detach().flatten()[:COMPARED_VALUES].double().cpu().tolist()][:COMPARED_VALUES]
    warmup = int(warm[1])
    for _ in range(warmup):
        time_step(step, workload.device)
    _send(reply, {"ready": warmup, "first_step_s": first_step_s, "threads": torch.get_num_threads(), "values": values})
    for line in sys.stdin:
        count = int(line)
        if count <= 0:
            return
        gc.collect()
        gc.disable()
        times = [time_step(step, workload.device) for _ in range(count)]
        gc.enable()
        _send(reply, {"times": times, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})


def _send(reply: Any, message: dict[str, Any]) -> None:
    reply.write(json.dumps(message) + "\n")
    reply.flush()


def main() -> None:
    request = json.loads(sys.argv[1])
    with os.fdopen(int(sys.argv[2]), "w") as reply:
        try:
            serve(request, reply)
        except BaseException as exc:  # the user's code may raise anything; the parent reports it in one line
            _send(reply, {"error": describe_exception(exc)})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing left to keep: skip the interpreter's teardown (0.5 s with torch loaded) of a finished block


if __name__ == "__main__":
    main()
