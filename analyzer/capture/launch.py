"""Run a data-parallel job: N workers started by PyTorch's elastic launcher (what torchrun runs), each loading the
model file, wrapping it in DistributedDataParallel and running one task on its rank.

A worker that fails makes the whole job fail: the launcher stops the other workers, and JobError carries the
failing rank's one-line error. Worker output goes to log files in a scratch folder, not to the console.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from convdoctor.analyzer.capture.workload import (
    DdpSettings,
    Workload,
    describe_exception,
    load_workload,
)
from convdoctor.errors import ConvDoctorError, JobError

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class JobSpec:
    """What every worker of a job loads and how it joins the job."""

    model_file: str
    device: str  # "cpu" or "cuda": rank k uses cuda:k
    mode: str
    batch_size: int | None
    nproc: int
    backend: str
    ddp: DdpSettings = DdpSettings()

    @property
    def threads(self) -> int:
        """Intra-op threads per worker: the cores shared out, as torchrun's one thread per worker does on a GPU."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.nproc)


class Task(Protocol):
    """What a worker does with its workload (DDP settings attached) once the process group is up."""

    def run(self, workload: Workload, rank: int) -> Any: ...


class WorkerError(Exception):
    """A worker's failure as one line (``rank k: ...``): what the job reports."""


def run_job(spec: JobSpec, task: Task) -> list[Any]:
    """Launch ``spec.nproc`` workers on this machine, run ``task`` on each, return their results by rank.

    Raises JobError with the first failing rank's one-line error; no worker outlives the call.
    """
    if spec.backend == "nccl" and spec.device != "cuda":
        raise JobError("--backend nccl needs CUDA devices; use --backend gloo on the CPU")
    if spec.device == "cuda" and torch.cuda.device_count() < spec.nproc:
        raise JobError(f"--nproc {spec.nproc} on CUDA needs {spec.nproc} GPUs, this machine has "
                       f"{torch.cuda.device_count()}; lower --nproc or use --device cpu")
    with tempfile.TemporaryDirectory(prefix="convdoctor-job-") as logs:
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=spec.nproc, run_id=f"convdoctor-{uuid.uuid4().hex[:8]}",
            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0, monitor_interval=0.1,
            start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=Std.ALL),
        )
        try:
            with _quiet_launcher():
                results = elastic_launch(config, _worker)(spec, task)
        except ChildFailedError as exc:
            raise JobError(_failure_line(exc)) from None
    return [results[rank] for rank in range(spec.nproc)]


@record
def _worker(spec: JobSpec, task: Task) -> Any:
    """One rank: join the process group, load the model file, run the task. Errors become one-line WorkerErrors."""
    rank = int(os.environ["RANK"])
    try:
        local = int(os.environ["LOCAL_RANK"])
        device = f"cuda:{local}" if spec.device == "cuda" else "cpu"
        if spec.device == "cuda":
            torch.cuda.set_device(local)
        torch.set_num_threads(spec.threads)
        dist.init_process_group(spec.backend)
        try:
            workload = load_workload(Path(spec.model_file), device=device, mode=spec.mode,
                                     batch_size=spec.batch_size)
            return task.run(replace(workload, ddp=spec.ddp), rank)
        finally:
            dist.destroy_process_group()
    except ConvDoctorError as exc:
        raise WorkerError(f"rank {rank}: {exc}") from None
    except Exception as exc:
        raise WorkerError(f"rank {rank}: {describe_exception(exc)}") from None


def _failure_line(exc: ChildFailedError) -> str:
    """The failing rank's one-line error: a rank that raised before one that was stopped (killed by a signal)."""
    failures = sorted(exc.failures.items(), key=lambda item: (item[1].exitcode < 0, item[1].timestamp))
    rank, failure = failures[0]
    message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
    message = str(message or "").strip()
    if message.startswith(WorkerError.__name__ + ": "):
        return message[len(WorkerError.__name__) + 2:].splitlines()[0]
    if failure.exitcode < 0:
        return f"rank {rank}: the worker was killed by {failure.signal_name()}"
    return f"rank {rank}: the worker exited with code {failure.exitcode}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _quiet_launcher() -> Iterator[None]:
    """Keep the launcher's own log lines (worker start, failure tables) off the console: JobError says it."""
    prefixes = ("torch.distributed", "torch.multiprocessing")
    names = [name for name in logging.root.manager.loggerDict if name.startswith(prefixes)]
    loggers = [logging.getLogger(name) for name in [*prefixes, *names]]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
