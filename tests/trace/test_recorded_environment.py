"""The recorded environment: what capture writes into a trace's metadata is what the typed record reads back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import SHARED_TRACES, capture_analysis
from torch import nn

from convdoctor.analyzer.capture.workload import workload_from
from convdoctor.analyzer.trace.environment import RecordedEnvironment
from convdoctor.analyzer.trace.module_record import MODULES_KEY
from convdoctor.analyzer.trace.probe_record import LAYOUT_PROBE_KEY
from convdoctor.analyzer.trace.profile import METADATA_KEY
from convdoctor.analyzer.trace.reader import load_profile


def test_every_setting_capture_records_reads_back_typed(tmp_path: Path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    analysis = capture_analysis(workload_from(model, torch.randn(2, 3, 16, 16), device="cpu", source="conv_relu"),
                                tmp_path)
    trace = Path(analysis.profile.trace_path)
    raw = json.loads(trace.read_text())[METADATA_KEY]
    recorded = analysis.profile.environment
    # nothing written that is not read (the probe's and the modules' records have readers of their own)
    assert set(raw) - {LAYOUT_PROBE_KEY, MODULES_KEY} == set(recorded.to_metadata())
    assert recorded.recorded and recorded.mode == "eval" and recorded.batch_size == 2
    assert recorded.threads == torch.get_num_threads() and recorded.device == "cpu"
    assert recorded.unprofiled_step_us is not None and recorded.unprofiled_step_us > 0
    assert RecordedEnvironment.from_metadata(recorded.to_metadata()) == recorded


def test_a_trace_from_elsewhere_records_nothing():
    environment = load_profile(SHARED_TRACES["resnet50"]).environment
    assert not environment.recorded and environment == RecordedEnvironment()


def test_values_of_another_type_read_as_none_and_ints_stay_ints():
    environment = RecordedEnvironment.from_metadata({
        "threads": True, "batch_size": 2**70, "peak_flops": 3, "ddp_bucket_cap_mb": 25, "heap_kept": "yes",
        "unprofiled_step_us": float("inf"), "mode": "train"})
    assert environment.threads is None and environment.batch_size is None and environment.heap_kept is None
    assert environment.peak_flops == 3.0 and isinstance(environment.peak_flops, float)
    assert environment.ddp_bucket_cap_mb == 25 and isinstance(environment.ddp_bucket_cap_mb, int)
    assert environment.unprofiled_step_us is None and environment.mode == "train"
