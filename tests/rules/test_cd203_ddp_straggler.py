"""CD203 on a real 2-rank job whose rank 1 sleeps in its forward, and on the same traces without the job view."""

from conftest import job_analyses

from convdoctor.rules.cd203_ddp_straggler import DdpStragglerRule


def test_triggers_on_the_rank_that_sleeps(slow_rank_job):
    out, _ = slow_rank_job
    (finding,) = DdpStragglerRule().check(job_analyses(out)[0])
    assert finding.evidence.rank == 1
    assert finding.evidence.extra_untraced_ms > 75
    assert "outside any operator" in finding.advice


def test_silent_without_the_other_ranks(slow_rank_job):
    out, _ = slow_rank_job
    single = job_analyses(out)[1]
    single.job = None
    assert list(DdpStragglerRule().check(single)) == []
