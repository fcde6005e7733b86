"""The Memory view's peak beside Holistic Trace Analysis's memory timeline, on one real profiled step.

HTA's ``MemoryAnalysis`` (hta/memory_analysis.py, HolisticTraceAnalysis 0.5.0) does not read Kineto's ``[memory]``
events: it reads the raw memory timeline of torch's memory profiler (``prof.export_memory_timeline(...raw.json.gz)``,
which needs record_shapes, profile_memory and with_stack) and sums the bytes of each category (parameters, inputs,
activations, gradients, temporaries...) over time. Its peak is the largest sum over categories; convdoctor's is the
largest ``Total Allocated`` of the device inside a step. The script records one training step of
tests/models/step_views.py on the CPU with both, and prints both peaks (a markdown row with ``--markdown``).

    python benchmarks/memory_hta.py [--markdown FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from hta.memory_analysis import MemoryAnalysis
from torch.profiler import ProfilerActivity, profile, schedule

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "models"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    import step_views

    from convdoctor.analyzer.step.memory import memory_view
    from convdoctor.analyzer.trace.reader import load_profile

    model, inputs = step_views.get_model().train(), step_views.get_inputs()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad()
        model(inputs).sum().backward()
        optimizer.step()

    with tempfile.TemporaryDirectory() as scratch:
        trace, timeline = Path(scratch) / "step.pt.trace.json", Path(scratch) / "memory.raw.json.gz"
        with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=1, warmup=1, active=1),
                     record_shapes=True, profile_memory=True, with_stack=True) as prof:
            for _ in range(3):
                step()
                prof.step()
        prof.export_chrome_trace(str(trace))
        prof.export_memory_timeline(str(timeline), device="cpu")
        times, sizes = MemoryAnalysis(str(timeline))._process_raw_events()
        hta_peak = max(sum(row) for row in sizes)
        (device,) = memory_view(load_profile(trace)).devices
    row = (f"| {torch.__version__} | step_views.py, train, CPU, 1 step | {device.peak_bytes:,} | {hta_peak:,} | "
           f"{hta_peak / device.peak_bytes:.3f} |")
    print(row)
    if args.markdown:
        with args.markdown.open("a") as out:
            out.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
