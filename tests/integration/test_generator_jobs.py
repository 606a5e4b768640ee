"""A healthy stack: jobs end to end, determinism, the cache, batching, cancellation, fairness, the archive."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time

import httpx
import numpy as np
import pytest
import redis

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from gift_common.content_key import image_key
from gift_common.schemas import JobRequest, JobState
from services.testing.generator import drop_cache, pixels, wait_for

pytestmark = pytest.mark.integration
FAST = {"num_inference_steps": 4}


def _metric(stack, name: str) -> float:
    for line in httpx.get(f"{stack.api_url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_job_end_to_end(client: GeneratorClient):
    request = JobRequest(prompts=["a red circle", "a blue square", "a green triangle"], seed=11, height=48, width=40,
                         **FAST)  # fmt: skip
    job, images = client.generate(request, progress=False)
    assert job.status == JobState.succeeded and job.done == job.total == 3
    assert [image.index for image in job.images] == [0, 1, 2]
    assert [image.seed for image in job.images] == [11, 12, 13]
    for info, png in zip(job.images, images, strict=True):
        assert hashlib.sha256(png).hexdigest() == info.sha256
        assert pixels(png).shape == (48, 40, 3)


def test_default_size_is_the_models_native_size(client: GeneratorClient):
    (model,) = [m for m in client.models() if m.default]
    _, (png,) = client.generate(JobRequest(prompts=["a yellow star"], **FAST), progress=False)
    assert pixels(png).shape == (model.height, model.width, 3)


def test_same_seed_same_bytes_when_generated_again(client: GeneratorClient, stack):
    request = JobRequest(prompts=["a purple ring", "two small dots"], seed=5, **FAST)
    first, _ = client.generate(request, progress=False)
    drop_cache(stack.redis_url)
    generated = _metric(stack, "gift_images_generated_total")
    second, _ = client.generate(request, progress=False)
    assert second.cached == 0 and _metric(stack, "gift_images_generated_total") == generated + 2
    assert [i.sha256 for i in first.images] == [i.sha256 for i in second.images]


def test_resubmitted_job_is_served_from_the_cache(client: GeneratorClient, stack):
    request = JobRequest(prompts=[f"a grey shape number {i}" for i in range(6)], seed=3, **FAST)
    first, _ = client.generate(request, progress=False)
    generated = _metric(stack, "gift_images_generated_total")
    again = client.submit(request)
    assert again.status == JobState.succeeded, "a fully cached job finishes at once"
    assert again.cached == again.total == 6
    assert [i.sha256 for i in again.images] == [i.sha256 for i in first.images]
    assert _metric(stack, "gift_images_generated_total") == generated, "the pipeline must not be called"


def test_image_is_the_same_alone_or_in_a_batch(client: GeneratorClient, stack):
    _, (alone_png,) = client.generate(JobRequest(prompts=["a striped orange circle"], seed=77, **FAST),
                                          progress=False)  # fmt: skip
    drop_cache(stack.redis_url)
    prompts = [f"filler prompt {i}" for i in range(7)]
    prompts.insert(3, "a striped orange circle")
    seeds = [100 + i for i in range(8)]
    seeds[3] = 77
    batched, pngs = client.generate(JobRequest(prompts=prompts, seeds=seeds, **FAST), progress=False)
    assert batched.cached == 0
    difference = np.abs(pixels(pngs[3]) - pixels(alone_png)).max()
    assert difference <= 2, f"pixel off by {difference} of 255 between batchings"


def test_cancel_stops_generation(client: GeneratorClient, stack):
    job = client.submit(JobRequest(prompts=[f"cancel me {i}" for i in range(400)], num_inference_steps=25))
    wait_for(lambda: client.status(job.id).done >= 8, 120, "the first images")
    cancelled = client.cancel(job.id)
    assert cancelled.status == JobState.cancelled and cancelled.finished_at is not None
    done = client.status(job.id).done
    generated = _metric(stack, "gift_images_generated_total")
    time.sleep(1.5)
    after = client.status(job.id)
    assert after.status == JobState.cancelled and after.done == done < 400
    assert _metric(stack, "gift_images_generated_total") <= generated + 8, "at most the batch in flight finishes"
    assert client.cancel(job.id).status == JobState.cancelled, "cancelling twice is harmless"


def test_small_job_is_not_starved_by_a_big_one(client: GeneratorClient):
    big = client.submit(JobRequest(prompts=[f"big job image {i}" for i in range(240)], seed=1000, **FAST))
    wait_for(lambda: client.status(big.id).done >= 8, 60, "the big job to start")
    small = client.submit(JobRequest(prompts=[f"small job image {i}" for i in range(8)], seed=1000, **FAST))
    finished_small = client.wait(small.id, timeout=120, progress=False)
    big_now = client.status(big.id)
    assert finished_small.status == JobState.succeeded
    assert big_now.status == JobState.running and big_now.done < 240
    client.cancel(big.id)


def test_archive_is_webdataset_layout(client: GeneratorClient):
    request = JobRequest(prompts=["a white cross", "a black heart"], seed=21, negative_prompt="blurry", **FAST)
    job, pngs = client.generate(request, progress=False)
    with client.archive(job.id) as chunks:
        data = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names == ["000000.png", "000000.txt", "000000.json", "000001.png", "000001.txt", "000001.json"]
        assert tar.extractfile("000001.png").read() == pngs[1]
        assert tar.extractfile("000001.txt").read().decode() == "a black heart"
        meta = json.loads(tar.extractfile("000001.json").read())
    assert meta["seed"] == 22 and meta["negative_prompt"] == "blurry" and meta["num_inference_steps"] == 4
    assert (meta["height"], meta["width"]) == pixels(pngs[1]).shape[:2]


def test_operations_endpoints(stack):
    assert httpx.get(f"{stack.api_url}/healthz").status_code == 200
    assert httpx.get(f"{stack.api_url}/readyz").status_code == 200
    text = httpx.get(f"{stack.api_url}/metrics").text
    for family in (
        "gift_queue_jobs",
        "gift_queue_images",
        "gift_images_generated_total",
        "gift_cache_hits_total",
        "gift_batch_size_bucket",
        "gift_job_seconds_bucket",
        "gift_api_request_seconds_bucket",
    ):
        assert family in text, family  # fmt: skip
    schema = httpx.get(f"{stack.api_url}/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/archive", "/v1/images/{sha256}", "/v1/models"} <= set(
        schema["paths"]
    )
    assert httpx.get(f"{stack.api_url}/docs").status_code == 200


def test_cache_lookup_of_a_large_job_keeps_every_index(client: GeneratorClient, stack):
    """More prompts than one lookup script takes: hits found in later batches land on their own indices."""
    registered = json.loads(redis.Redis.from_url(stack.redis_url).hget(redis_keys.MODELS, "tinyworld"))
    prompts = [f"pre-cached prompt {i}" for i in range(700)]
    store = redis.Redis.from_url(stack.redis_url)
    expected = {}
    for i, prompt in enumerate(prompts):
        if i % 3:  # every third image is not cached: the job still needs the worker for those
            continue
        key = image_key(model_fingerprint=registered["fingerprint"], prompt=prompt, negative_prompt=None, seed=i,
                        num_inference_steps=1, guidance_scale=7.5, height=32, width=32)  # fmt: skip
        sha = hashlib.sha256(prompt.encode()).hexdigest()
        store.set(redis_keys.png(sha), prompt.encode(), ex=600)
        store.set(redis_keys.cache(key), sha, ex=600)
        expected[i] = sha
    job = client.submit(JobRequest(prompts=prompts, num_inference_steps=1))
    assert job.cached == len(expected) == job.done
    assert {image.index: image.sha256 for image in job.images} == expected
    client.cancel(job.id)
