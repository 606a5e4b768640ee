"""Redis faults as an operator meets them: killed and restarted from its append-only file, full, and a burst
of submissions against a tenant's limit. The trial logic is services/fault_trials.py (also bench/redis_faults.py)."""

from __future__ import annotations

import pytest

from services.fault_trials import maxmemory_trial, quota_burst, redis_kill_trials

pytestmark = pytest.mark.integration


def _kill_trials(make_stack, trials: int) -> None:
    stack = make_stack(workers=1, appendfsync="everysec")  # as docker-compose.yml runs Redis
    outcomes = redis_kill_trials(stack, trials, bound=60.0)
    assert outcomes.accepted == trials
    assert outcomes.lost == 0 and outcomes.wrong_images == 0, outcomes
    assert outcomes.stuck == 0, f"a job stayed unfinished 60 s after Redis came back: {outcomes}"
    assert outcomes.all_complete()


def test_redis_killed_right_after_202s_strands_and_loses_nothing(make_stack):
    _kill_trials(make_stack, trials=4)


@pytest.mark.slow
def test_redis_killed_right_after_202s_many_times(make_stack):
    _kill_trials(make_stack, trials=40)


def test_full_redis_answers_503_never_500_and_loses_nothing(make_stack):
    stack = make_stack(workers=1)
    figures = maxmemory_trial(stack)
    assert figures.server_errors() == 0, figures.answers
    assert set(figures.answers["submit"]) == {"503"}, "nothing is accepted while Redis cannot store it"
    assert set(figures.answers["status"]) == {"200"} and set(figures.answers["cancel"]) == {"200"}, figures.answers
    assert figures.retry_after_missing == 0
    assert figures.outcomes.all_complete(), f"every job accepted ends with every image once: {figures.outcomes}"


def test_a_burst_of_submissions_never_passes_the_tenant_limit(make_stack):
    stack = make_stack(workers=1, GIFT_MAX_QUEUED_JOBS_PER_TENANT="4")
    burst = quota_burst(stack, limit=4, threads=16, per_thread=6)
    assert burst.accepted == 4 and burst.unfinished_after == 4, burst
    assert burst.refused == burst.submitted - 4 and not burst.other, burst
    assert burst.refused_without_retry_after == 0
