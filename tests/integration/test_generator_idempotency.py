"""Idempotent submission: a retry after a lost answer returns the first job instead of creating a second one."""

from __future__ import annotations

import httpx
import pytest
import redis

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest

pytestmark = pytest.mark.integration


class LoseFirstAnswer(httpx.BaseTransport):
    """Sends every request to the server, but drops the answer to the first POST as a timeout would."""

    def __init__(self) -> None:
        self.inner, self.lost = httpx.HTTPTransport(), []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and not self.lost:
            self.lost.append(httpx.Response(response.status_code, content=response.read()).json())
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def _jobs(redis_client: redis.Redis) -> set[str]:
    return {key for key in redis_client.scan_iter(redis_keys.job("*")) if key.count(":") == 2}


def test_a_submit_whose_first_answer_is_lost_makes_one_job(stack, redis_client):
    before, transport = _jobs(redis_client), LoseFirstAnswer()
    with GeneratorClient(stack.api_url, retries=2, backoff=0.01, transport=transport) as client:
        job = client.submit(JobRequest(prompts=["idempotent: a lost answer"], num_inference_steps=2))
    (lost,) = transport.lost
    assert job.id == lost["id"], "the retry made a second job instead of returning the first"
    assert _jobs(redis_client) - before == {redis_keys.job(job.id)}


def test_the_same_key_returns_the_first_job_and_refuses_another_request(stack, redis_client):
    body = {"prompts": ["idempotent: the same key twice"], "num_inference_steps": 2}
    key = {"Idempotency-Key": "retry-me-1"}
    first = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers=key)
    again = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers=key)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    other = httpx.post(f"{stack.api_url}/v1/jobs", json={**body, "seed": 1}, headers=key)
    assert other.status_code == 422 and other.json()["detail"].startswith("Idempotency-Key: already used"), other.text
    fresh = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me-2"})
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


def test_the_key_expires_with_its_job(stack, redis_client):
    body = {"prompts": ["idempotent: expiry"], "num_inference_steps": 2}
    job = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers={"Idempotency-Key": "expiry"}).json()
    stored = redis_keys.idempotency("local", "expiry")
    assert redis_client.hget(stored, "job") == job["id"]
    done = httpx.get(f"{stack.api_url}/v1/jobs/{job['id']}?wait=30&images=false", timeout=40).json()
    assert done["status"] == "succeeded", done
    assert 0 < redis_client.ttl(stored) <= redis_client.ttl(redis_keys.job(job["id"])) + 1


def test_the_key_of_a_cancelled_job_expires_with_it(stack, redis_client):
    body = {"prompts": [f"idempotent: cancelled {i}" for i in range(64)], "num_inference_steps": 20}
    job = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers={"Idempotency-Key": "cancelled"}).json()
    stored = redis_keys.idempotency("local", "cancelled")
    assert redis_client.ttl(stored) == -1, "a live job's key does not expire"
    assert httpx.delete(f"{stack.api_url}/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert redis_client.ttl(stored) > 0


@pytest.mark.parametrize("value", ["", "x" * 256, "with space"])
def test_a_malformed_key_is_a_422_naming_the_header(stack, value):
    body = {"prompts": ["idempotent: bad key"]}
    response = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers={"Idempotency-Key": value})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
