"""CD204 on a real 2-rank job's trace (DDP defaults recorded), and silent on a single-device trace."""

from conftest import SHARED_TRACES, job_analyses

from convdoctor.rules.base import evidence_fields
from convdoctor.rules.cd204_ddp_static_graph import DdpStaticGraphRule


def test_triggers_on_a_ddp_trace_with_default_settings(slow_rank_job):
    out, _ = slow_rank_job
    (finding,) = DdpStaticGraphRule().check(job_analyses(out)[0])
    assert evidence_fields(finding.evidence) == {"static_graph": False, "find_unused_parameters": False}
    assert finding.candidate is not None


def test_silent_without_communication():
    from convdoctor.analyzer.conv.layers import analyze_convs
    from convdoctor.analyzer.trace.reader import load_profile

    assert list(DdpStaticGraphRule().check(analyze_convs(load_profile(SHARED_TRACES["cpu_only"])))) == []
