"""Fair share: a tenant with thirty jobs takes no more turns than a tenant with one; priority within a tenant."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable

import pytest

from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest, JobState
from services.stack import LocalStack

pytestmark = pytest.mark.integration
MANY_JOBS, IMAGES = 30, 8  # GIFT_BATCH_SIZE and the chunk size are 8 too: one chunk per job, two jobs per batch
BOUND = 24  # the crowd's images finished when both lone jobs are: two batches after them (read while we look)


def _job(client: GeneratorClient, name: str, priority: int = 0) -> str:
    prompts = [f"{name} image {i}" for i in range(IMAGES)]
    request = JobRequest(prompts=prompts, seed=uuid.uuid4().int % 2**62, num_inference_steps=2, priority=priority)
    return client.submit(request).id


def test_a_lone_job_is_not_queued_behind_another_tenants_many(make_stack: Callable[..., LocalStack]):
    stack = make_stack(GIFT_API_KEYS="crowd:key-c,solo:key-s")
    crowd = GeneratorClient(stack.api_url, api_key="key-c")
    solo = GeneratorClient(stack.api_url, api_key="key-s")
    worker = stack.workers[0].popen.pid
    os.kill(worker, signal.SIGSTOP)  # everything is queued before the worker reads any of it
    try:
        many = [_job(crowd, f"crowd {j}") for j in range(MANY_JOBS)]
        urgent = _job(crowd, "urgent", priority=5)  # the crowd's own last job, but its most urgent
        lone = _job(solo, "solo")
    finally:
        os.kill(worker, signal.SIGCONT)

    assert solo.wait(lone, timeout=300, progress=False).status == JobState.succeeded
    assert crowd.wait(urgent, timeout=300, progress=False).status == JobState.succeeded
    crowd_done = sum(crowd.status(job).done for job in many)
    # In submission order (one turn per job) both would come after all 240 of the crowd's other images.
    assert crowd_done <= BOUND, f"{crowd_done} of the crowd's other images were finished before the two lone jobs"
    for job in many:
        crowd.cancel(job)
    crowd.close()
    solo.close()
