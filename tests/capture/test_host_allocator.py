"""Keeping glibc's heap in a running process: a fresh process each time (the setting lasts as long as the process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from convdoctor.analyzer.capture.host_allocator import KEEP_HEAP, allocator

# Allocates and frees a 32 MiB tensor as a conv step does with its activations, and prints the minor page faults of
# one such step before and after keep_heap() (and what keep_heap returned).
STEPS = """
import torch
from convdoctor.analyzer.capture.host_allocator import faults_per_step, keep_heap

def step():
    torch.ones(8 << 20).sum()  # 32 MiB, written then freed

for _ in range(8):
    step()
before = faults_per_step(step, 4)
kept = keep_heap()
for _ in range(8):  # the heap grows to what a step needs
    step()
print(before, kept, faults_per_step(step, 4))
"""


def _without_allocator_settings() -> dict[str, str]:
    """This environment without MALLOC_* settings or a preloaded allocator: glibc with its defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}


def _run(env: dict[str, str]) -> tuple[int, bool, int]:
    done = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True,
                          env={**_without_allocator_settings(), **env},
                          timeout=120, check=True)
    before, kept, after = done.stdout.split()
    return int(before), kept == "True", int(after)


@pytest.mark.skipif(not allocator().startswith("glibc malloc"), reason="glibc malloc only")
def test_keeping_the_heap_ends_the_page_faults_of_a_large_block_freed_every_step():
    before, kept, after = _run({})
    assert kept
    assert before >= (32 << 20) // 4096 // 2  # glibc maps the block afresh: about a fault per 4 KiB page
    assert after < before // 20  # reused from the heap


@pytest.mark.skipif(not allocator().startswith("glibc malloc"), reason="glibc malloc only")
def test_the_user_s_own_settings_are_left_as_they_are():
    # the fewest faults of three processes: a run right after other processes freed gigabytes (CI's first phase)
    # once counted 2048 faults a step, the kernel reclaiming pages meanwhile
    runs = [_run(dict(KEEP_HEAP)) for _ in range(3)]
    assert not any(kept for _, kept, _ in runs)  # keep_heap leaves the user's settings as they are
    assert min(before for before, _, _ in runs) < 100 and min(after for _, _, after in runs) < 100  # they keep it


def test_only_glibc_with_its_defaults_is_changed(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator() == "jemalloc (LD_PRELOAD)"
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator().endswith("(MALLOC_ARENA_MAX=2)")
    assert not _run({"MALLOC_ARENA_MAX": "2"})[1]  # keep_heap leaves the user's settings as they are


# One rank of a data-parallel measuring job (world size 1): measure_job keeps the heap before it times anything.
JOB_RANK = """
import datetime
import torch
import torch.distributed as dist
from torch import nn
from convdoctor.analyzer.capture.host_allocator import heap_kept
from convdoctor.analyzer.measure.job_tasks import measure_job
from convdoctor.analyzer.measure.results import BenchmarkSettings
from convdoctor.analyzer.capture.workload import workload_from

dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
workload = workload_from(nn.Conv2d(3, 8, 3), torch.randn(2, 3, 16, 16), device="cpu", mode="train")
before = heap_kept()
settings = BenchmarkSettings(block_spacing_s=0, extra_blocks=0,
                             warmup_s=0.0, warmup_steps=1, max_warmup_s=1.0, min_rounds=3, max_rounds=3, blocks=1)
measure_job(workload, workload.copy(), settings)
print(before, heap_kept())
dist.destroy_process_group()
"""


@pytest.mark.skipif(not allocator().startswith("glibc malloc"), reason="glibc malloc only")
def test_a_measuring_job_rank_keeps_the_heap_before_it_times():
    done = subprocess.run([sys.executable, "-c", JOB_RANK], capture_output=True, text=True,
                          env=_without_allocator_settings(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
