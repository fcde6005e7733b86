"""The Python API: profile a model file, or a model object on example inputs, as `convdoctor profile` does."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from convdoctor.analyzer.capture.workload import Inputs, load_workload, time_limit, workload_from
from convdoctor.errors import JobError
from convdoctor.options import ProfileOptions
from convdoctor.pipeline import ReportFiles, prepare_out_dir, profile_job, profile_workload
from convdoctor.progress import Progress, SilentProgress
from convdoctor.reports.report import Report

__all__ = ["ProfileOptions", "profile", "profile_file"]


def profile_file(
    path: str | Path, options: ProfileOptions = ProfileOptions(), progress: Progress = SilentProgress()
) -> tuple[Report, ReportFiles]:
    """Profile the model a model file defines; write report.html, report.json and traces to the out dir."""
    path = Path(path)
    out_dir = options.out_dir or Path("convdoctor-out") / path.stem
    files = prepare_out_dir(out_dir)
    if options.nproc > 1:
        return profile_job(path, options, files, progress), files
    progress.stage(f"loading {path}")
    with time_limit(options.timeout_s, f"loading {path}"):
        workload = load_workload(path, device=options.device, mode=options.mode, batch_size=options.batch_size)
    return profile_workload(workload, options, files, progress), files


def profile(
    model: nn.Module, inputs: Inputs, options: ProfileOptions = ProfileOptions(),
    progress: Progress = SilentProgress(),
) -> tuple[Report, ReportFiles]:
    """Profile a model object on example inputs; neither is modified."""
    if options.nproc > 1:
        raise JobError("nproc above 1 needs a model file that every worker imports: use profile_file()")
    out_dir = options.out_dir or Path("convdoctor-out") / type(model).__name__
    files = prepare_out_dir(out_dir)
    workload = workload_from(model, inputs, device=options.device, mode=options.mode,
                             source=f"{type(model).__module__}.{type(model).__name__}")
    return profile_workload(workload, options, files, progress), files
