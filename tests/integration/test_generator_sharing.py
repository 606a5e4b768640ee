"""Two tenants on one stack: a cancelled large call gives way to the other's small job; the cache's sharing scope."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import wait_for

pytestmark = pytest.mark.integration

KEYS = {"GIFT_API_KEYS": "alice:alice-key,bob:bob-key"}
ALICE, BOB = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}


def _submit(stack, headers: dict[str, str], body: dict) -> dict:
    response = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def _finish(stack, headers: dict[str, str], job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{stack.api_url}/v1/jobs/{job_id}?wait=10", headers=headers, timeout=20).json()
        if status["status"] in ("succeeded", "failed", "cancelled"):
            return status
    raise AssertionError(f"job {job_id} did not end within {timeout} s")


def _generated(stack) -> float:
    for line in httpx.get(f"{stack.api_url}/metrics").text.splitlines():
        if line.startswith("gift_images_generated_total "):
            return float(line.split()[1])
    return 0.0


def test_cancel_stops_a_running_pipeline_call_so_another_tenants_job_waits_no_longer(make_stack):
    stack = make_stack(**KEYS)
    worker_log = stack.run_dir / "worker0.log"
    large = {"prompts": [f"a large slow image {i}" for i in range(8)], "height": 64, "width": 64,
             "num_inference_steps": 40}  # fmt: skip
    big = _submit(stack, ALICE, large)
    wait_for(lambda: f"job {big['id']}: started" in worker_log.read_text(), 60, "the worker to take the large job")
    time.sleep(2)  # well into its pipeline call
    small = _submit(stack, BOB, {"prompts": ["a small quick image"], "num_inference_steps": 2})
    cancelled_at = time.monotonic()
    assert httpx.delete(f"{stack.api_url}/v1/jobs/{big['id']}", headers=ALICE).json()["status"] == "cancelled"
    assert _finish(stack, BOB, small["id"])["status"] == "succeeded"
    print(f"the small job finished {time.monotonic() - cancelled_at:.1f} s after the large one was cancelled")
    assert "stopped after denoising step" in worker_log.read_text(), "the large call ran to its end"
    assert _generated(stack) == 1, "only the small job's image is made: the large call was cut short"
