"""Redis faults as an operator meets them: killed and restarted from its append-only file, full, and a burst
of submissions against a tenant's limit. The trial logic is services/testing/fault_trials.py (also
bench/redis_faults.py)."""

from __future__ import annotations

import os
import signal

import pytest
import redis

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest
from services.generator.api.jobs import REDIS_FULL
from services.testing.fault_trials import headroom_trial, maxmemory_trial, quota_burst, redis_kill_trials

pytestmark = pytest.mark.integration


def _kill_trials(make_stack, trials: int) -> None:
    stack = make_stack(workers=1)  # appendfsync always, as docker-compose.yml runs Redis (everysec loses some)
    outcomes = redis_kill_trials(stack, trials, bound=60.0)
    assert outcomes.accepted == trials
    assert outcomes.lost == 0 and outcomes.wrong_images == 0, outcomes
    assert outcomes.stuck == 0, f"a job stayed unfinished 60 s after Redis came back: {outcomes}"
    assert outcomes.all_complete()


def test_redis_killed_right_after_202s_strands_and_loses_nothing(make_stack):
    _kill_trials(make_stack, trials=4)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_redis_killed_right_after_202s_many_times(make_stack):
    _kill_trials(make_stack, trials=40)


def test_past_the_admission_mark_new_work_waits_and_accepted_work_finishes(make_stack):
    """Redis between the API's mark (50% here) and its maxmemory: new jobs get Redis-full 503s from both routes,
    while a job accepted before is recorded, reads answer and a worker's heartbeats keep /readyz at 200."""
    stack = make_stack(workers=1, GIFT_REDIS_ADMIT_FRACTION="0.5", GIFT_WORKER_SEEN_SECONDS="2")
    figures = headroom_trial(stack, 0.5, seconds=4.0)
    assert all(0.5 <= share < 1 for share in figures.used_share), f"the premise: {figures.used_share}"
    assert set(figures.answers["submit"]) == {"503"} and set(figures.answers["openai"]) == {"503"}, figures.answers
    assert figures.retry_after_missing == 0
    assert set(figures.openai_errors) == {"server_error service_unavailable param=None"}, figures.openai_errors
    for refusal in figures.refusals:
        assert refusal.startswith(REDIS_FULL) and "stops admitting at 50% of Redis's maxmemory" in refusal, refusal
    assert set(figures.answers["status"]) == {"200"} and set(figures.answers["readyz"]) == {"200"}, figures.answers
    assert figures.heartbeat_age_seconds < 2, "the worker's heartbeats were stored under the limit"
    assert figures.outcomes.all_complete(), f"the job accepted before ends with every image once: {figures.outcomes}"
    submits = sum(figures.answers["submit"].values())
    assert 1 <= figures.memory_reads <= 4 + 2 < submits, "the API reads Redis's memory about once a second"


def test_without_the_mark_redis_itself_refuses_503_never_500_and_loses_nothing(make_stack):
    """GIFT_REDIS_ADMIT_FRACTION=1: admitted up to maxmemory, then Redis's own refusal (at 1 byte) is the 503."""
    stack = make_stack(workers=1, GIFT_REDIS_ADMIT_FRACTION="1")
    admin = redis.Redis.from_url(stack.redis_url)
    # Room for one job above what the idle stack holds. With the listings' index a first submission raised Redis's
    # overhead by about 80 KB more than before it (MEMORY STATS), and at 0.75 the job's first record was refused.
    admin.config_set("maxmemory", int(int(admin.info("memory")["used_memory"]) / 0.6))
    try:
        with GeneratorClient(stack.api_url, retries=0) as client:
            job = client.submit(JobRequest(prompts=["past a mark that is off"], num_inference_steps=2))
            assert client.wait(job.id, timeout=60, progress=False).images
    finally:
        admin.config_set("maxmemory", 0)
    figures = maxmemory_trial(stack)
    assert figures.server_errors() == 0, figures.answers
    assert set(figures.answers["submit"]) == {"503"}, "nothing is accepted while Redis cannot store it"
    assert set(figures.refusals) == {REDIS_FULL}, "Redis refused, not the mark"
    assert set(figures.answers["status"]) == {"200"} and set(figures.answers["cancel"]) == {"200"}, figures.answers
    assert figures.retry_after_missing == 0
    assert figures.outcomes.all_complete(), f"every job accepted ends with every image once: {figures.outcomes}"


def test_a_burst_of_submissions_never_passes_the_tenant_limit(make_stack):
    stack = make_stack(workers=1, GIFT_MAX_QUEUED_JOBS_PER_TENANT="4")
    burst = quota_burst(stack, limit=4, threads=16, per_thread=6)
    assert burst.accepted == 4 and burst.unfinished_after == 4, burst
    assert burst.refused == burst.submitted - 4 and not burst.other, burst
    assert burst.refused_without_retry_after == 0


def test_a_worker_takes_back_its_own_chunk_that_it_never_received(make_stack):
    """As when Redis ran a worker's read and died before the reply: the chunk is pending under a live worker
    that never got it (its heartbeat does not keep it fresh), so after the claim timeout the worker takes it."""
    stack = make_stack(workers=1)
    admin = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    (consumer,) = admin.zrange(redis_keys.WORKERS, 0, -1)
    worker = stack.workers[0]
    client = GeneratorClient(stack.api_url, retries=2, backoff=0.1)
    os.kill(worker.pid, signal.SIGSTOP)  # so that only the read below delivers the job's chunk
    try:
        job = client.submit(JobRequest(prompts=[f"lost reply {i}" for i in range(8)], num_inference_steps=2))
        delivered = admin.xreadgroup("workers", consumer, {redis_keys.job_work(job.id): ">"}, count=100)
        assert delivered, "the job's chunk is now pending under the worker"
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    finished = client.wait(job.id, timeout=60, progress=False)
    assert sorted(image.index for image in finished.images) == list(range(8))
