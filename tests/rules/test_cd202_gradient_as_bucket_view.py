"""CD202 on a real 2-rank job's trace (DDP's default copies), and silent where the trace says the view is on."""

import pickle

from conftest import job_analyses

from convdoctor.rules.cd202_gradient_as_bucket_view import GradientAsBucketViewRule


def test_copies_found_in_a_default_ddp_trace(slow_rank_job):
    out, _ = slow_rank_job
    analysis = job_analyses(out)[1]  # rank 1's step is long (it sleeps): use a lower threshold than the default
    rule = GradientAsBucketViewRule()
    rule.min_share = 0.0
    (finding,) = rule.check(analysis)
    assert finding.evidence.copy_ms > 0
    assert pickle.loads(pickle.dumps(finding.candidate)).title == "DDP with gradient_as_bucket_view=True"


def test_silent_when_the_view_is_on(slow_rank_job):
    out, _ = slow_rank_job
    analysis = job_analyses(out)[1]
    analysis.profile.metadata["convdoctor"]["ddp_gradient_as_bucket_view"] = True
    rule = GradientAsBucketViewRule()
    rule.min_share = 0.0
    assert list(rule.check(analysis)) == []
