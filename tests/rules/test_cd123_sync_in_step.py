"""CD123 sync-in-step: triggers on the A100 recsys trace (``.item()`` in every step), with figures checked against
the raw events; not on the V100 trace, whose only synchronizations are those of its pageable copies (CD122's)."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from conftest import SHARED_TRACES, cached_profile

from convdoctor.analyzer.conv.layers import analyze_convs
from convdoctor.rules.base import SavingBound, evidence_fields
from convdoctor.rules.cd123_sync_in_step import SyncInStepRule

pytestmark = pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)


def test_triggers_on_item_in_the_recsys_steps():
    path = SHARED_TRACES["recsys"]
    findings = list(SyncInStepRule().check(analyze_convs(cached_profile(path))))
    assert len(findings) == 1
    finding = findings[0]
    assert finding.rule_id == "CD123" and finding.candidate is None
    assert finding.saving_bound is SavingBound.AT_MOST and "not measured" in finding.advice
    events = [e for e in json.loads(gzip.decompress(path.read_bytes()))["traceEvents"] if e.get("ph") == "X"]
    steps = [(e["ts"], e["ts"] + e["dur"]) for e in events if re.fullmatch(r"ProfilerStep#\d+", e["name"])]
    syncs = [e for e in events if e["name"] in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                "cudaEventSynchronize") and any(a <= e["ts"] < b for a, b in steps)]
    evidence = finding.evidence
    json.dumps(evidence_fields(evidence))
    # the trace copies nothing from pageable memory: every synchronization in the steps counts
    assert evidence.syncs_per_step == pytest.approx(len(syncs) / len(steps))
    assert evidence.blocked_ms_per_step == pytest.approx(sum(e["dur"] for e in syncs) / len(steps) / 1e3)
    step_us = sum(b - a for a, b in steps) / len(steps)
    assert finding.estimated_saving == pytest.approx(sum(e["dur"] for e in syncs) / len(steps) / step_us)
    assert any(site.operator == "aten::item" for site in evidence.sites)
    assert not evidence.has_python_stacks and all(site.source is None for site in evidence.sites)


def test_silent_when_the_only_syncs_are_pageable_copies():
    analysis = analyze_convs(cached_profile(SHARED_TRACES["resnet50"]))
    syncs = [op for op in analysis.profile.ops if op.name == "cudaStreamSynchronize"]
    assert syncs  # it synchronizes, inside the copies of its batches
    assert list(SyncInStepRule().check(analysis)) == []
