"""CD122 pageable-htod: triggers on the V100 trace (its batches are copied from pageable memory), with figures
checked against the raw events; not on the A100 recsys trace, whose host-to-device copies are from pinned memory."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from conftest import SHARED_TRACES, cached_profile

from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.rules.base import SavingBound, evidence_fields
from convdoctor.rules.cd122_pageable_htod import PageableHtodRule

pytestmark = pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)


def raw_events(path):
    data = json.loads(gzip.decompress(path.read_bytes()))
    return [e for e in data["traceEvents"] if e.get("ph") == "X" and "dur" in e]


def test_triggers_on_pageable_copies_in_the_v100_steps():
    path = SHARED_TRACES["resnet50"]
    findings = list(PageableHtodRule().check(analyze_convs(cached_profile(path))))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD122" and finding.candidate is None  # in the training loop: not automatic
    assert "not measured" in finding.advice and "pin_memory=True" in finding.snippet
    events = raw_events(path)
    steps = [(e["ts"], e["ts"] + e["dur"]) for e in events if re.fullmatch(r"ProfilerStep#\d+", e["name"])]
    copies = [e for e in events if e["cat"] in ("Memcpy", "gpu_memcpy") and "HtoD (Pageable" in e["name"]
              and any(a <= e["ts"] < b for a, b in steps)]
    calls = {e["args"]["correlation"]: e for e in events if e["cat"] in ("Runtime", "cuda_runtime")}
    call_us = sum(calls[c["args"]["correlation"]]["dur"] for c in copies)
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    assert evidence.steps == len(steps) == 6
    assert evidence.copies_per_step == pytest.approx(len(copies) / len(steps)) and copies
    assert evidence.copy_ms_per_step == pytest.approx(sum(c["dur"] for c in copies) / len(steps) / 1e3)
    assert evidence.call_ms_per_step == pytest.approx(call_us / len(steps) / 1e3)
    step_us = sum(b - a for a, b in steps) / len(steps)
    assert finding.saving_bound is SavingBound.ESTIMATE
    assert finding.estimated_saving == pytest.approx(call_us / len(steps) / step_us)
    assert "pageable" in finding.message


def test_silent_on_pinned_copies():
    profile = cached_profile(SHARED_TRACES["recsys"])
    pinned = [k for k in profile.kernels if "HtoD (Pinned" in k.name]
    assert pinned  # the trace copies to the device, from pinned memory
    assert list(PageableHtodRule().check(analyze_convs(profile))) == []
