"""Nothing accepted is lost: a worker killed mid-job, Redis stopped and restarted under a running stack."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
import redis

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest, JobState
from services.testing.fault_trials import worker_kill_trials
from services.testing.generator import wait_for

pytestmark = pytest.mark.integration


def test_worker_killed_mid_job_is_taken_over(make_stack):
    stack = make_stack(workers=1, GIFT_BATCH_SIZE="4")
    client = GeneratorClient(stack.api_url, retries=2, backoff=0.1)
    request = JobRequest(prompts=[f"takeover image {i}" for i in range(48)], num_inference_steps=10, seed=500)
    job = client.submit(request)
    wait_for(lambda: client.status(job.id).done >= 4, 60, "the first worker to make some images")
    first = stack.workers[0]
    first.kill()
    before = client.status(job.id)
    assert before.status == JobState.running and before.done < 48, "the kill must come mid-job"

    stack.start_worker()
    finished = client.wait(job.id, timeout=180, progress=False)

    assert finished.status == JobState.succeeded
    indices = Counter(image.index for image in finished.images)
    assert sorted(indices) == list(range(48)) and set(indices.values()) == {1}, "every image exactly once"
    assert [image.seed for image in finished.images] == [500 + i for i in range(48)]
    metrics = httpx.get(f"{stack.api_url}/metrics").text
    assert "gift_chunks_reclaimed_total 0.0" not in metrics, "the dead worker's pending chunks were taken over"
    pending = redis.Redis.from_url(stack.redis_url).exists(redis_keys.job_work(job.id))
    assert pending == 0, "a finished job leaves no work behind"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_workers_killed_at_random_moments_lose_and_corrupt_nothing(make_stack):
    stack = make_stack(workers=2, GIFT_BATCH_SIZE="4")
    figures = worker_kill_trials(stack, kills=3, jobs=3, images=8)
    assert figures.kills > 0, "the jobs ended before any kill: make them longer"
    assert figures.outcomes.all_complete(), figures
    assert figures.images_checked == 3 * 8 and figures.images_corrupt == 0, figures


def test_redis_outage_gives_503_and_everything_recovers(make_stack):
    stack = make_stack(workers=1)
    client = GeneratorClient(stack.api_url, retries=0)
    job = client.submit(JobRequest(prompts=[f"outage image {i}" for i in range(64)], num_inference_steps=25))
    wait_for(lambda: client.status(job.id).done >= 8, 60, "the job to start")

    stack.redis.stop()
    for method, path, body in [("GET", f"/v1/jobs/{job.id}", None), ("POST", "/v1/jobs", {"prompts": ["x"]}),
                               ("GET", "/v1/models", None), ("GET", "/readyz", None)]:  # fmt: skip
        response = httpx.request(method, f"{stack.api_url}{path}", json=body)
        assert response.status_code == 503, (method, path, response.text)
        assert int(response.headers["Retry-After"]) > 0
    assert httpx.get(f"{stack.api_url}/healthz").status_code == 200
    time.sleep(2)  # the worker meets the outage too

    stack.redis.start()  # same port, same append-only file
    assert stack.api.alive() and stack.workers[0].alive(), "nothing is restarted but Redis"
    finished = client.wait(job.id, timeout=180, progress=False)
    assert finished.status == JobState.succeeded and finished.done == 64
    assert sorted(image.index for image in finished.images) == list(range(64))
    fresh = client.generate(JobRequest(prompts=["after the outage"], num_inference_steps=4), progress=False)[0]
    assert fresh.status == JobState.succeeded


def test_stopped_worker_hands_its_work_over_without_waiting_for_the_claim_timeout(make_stack):
    stack = make_stack(workers=1, GIFT_BATCH_SIZE="4", GIFT_CLAIM_TIMEOUT_SECONDS="600")
    client = GeneratorClient(stack.api_url, retries=2, backoff=0.1)
    job = client.submit(JobRequest(prompts=[f"handover image {i}" for i in range(40)], num_inference_steps=10))
    wait_for(lambda: client.status(job.id).done >= 4, 60, "the first worker to make some images")
    stack.workers[0].stop(timeout=120)  # SIGTERM: finish the batch in hand, release the rest
    assert "released" in stack.workers[0].log.read_text()
    assert client.status(job.id).done < 40, "the stop must come mid-job"
    stack.start_worker()
    finished = client.wait(job.id, timeout=120, progress=False)  # far less than the 600 s claim timeout
    assert finished.status == JobState.succeeded
    assert sorted(image.index for image in finished.images) == list(range(40))
