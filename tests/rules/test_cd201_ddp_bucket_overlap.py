"""CD201 on a real 2-rank job: rank 0 waits for a sleeping rank 1, which is not communication cost; and on one rank
read alone, whose allreduce (the one bucket of a tiny model) overlaps no compute."""

from conftest import job_analyses

from convdoctor.rules.cd201_ddp_bucket_overlap import DdpBucketOverlapRule


def test_waiting_for_a_straggler_is_not_taken_for_allreduce_cost(slow_rank_job):
    out, _ = slow_rank_job
    assert list(DdpBucketOverlapRule().check(job_analyses(out)[0])) == []


def test_triggers_on_a_rank_whose_allreduce_overlaps_nothing(slow_rank_job):
    out, _ = slow_rank_job
    waiting = job_analyses(out)[0]
    waiting.job = None  # alone, rank 0's trace shows its 150 ms in an allreduce beside no compute
    (finding,) = DdpBucketOverlapRule().check(waiting)
    assert finding.evidence.overlap_fraction < 0.5
    assert finding.evidence.exposed_comm_ms > 75
    assert finding.candidate is not None and finding.evidence.proposed_bucket_cap_mb >= 0.25
