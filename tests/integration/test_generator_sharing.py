"""Two tenants on one stack: a cancelled large call gives way to the other's small job; the cache's sharing scope."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from services.stack import LocalStack, Process, free_port, wait_until
from services.testing.generator import FAST_ENV, wait_for

pytestmark = pytest.mark.integration

KEYS = {"GIFT_API_KEYS": "alice:alice-key,bob:bob-key"}
ALICE, BOB = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home) -> Iterator[LocalStack]:
    """One stack with two tenants, alice and bob."""
    env = {"GIFT_HOME": str(model_home), **FAST_ENV, **KEYS}
    with LocalStack(tmp_path_factory.mktemp("tenants"), env=env) as tenants:
        yield tenants.start(workers=1)


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


def test_cancel_stops_a_running_pipeline_call_so_another_tenants_job_waits_no_longer(stack):
    worker_log = stack.run_dir / "worker0.log"
    stops, generated = worker_log.read_text().count("stopped after denoising step"), _generated(stack)
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
    assert worker_log.read_text().count("stopped after denoising step") == stops + 1, "the large call ran to its end"
    assert _generated(stack) == generated + 1, "only the small job's image is made: the large call was cut short"


def test_a_tenant_scoped_cache_shares_nothing_and_the_deployment_scope_shares_as_before(stack, tmp_path):
    secret = {"prompts": ["alice's own picture"], "num_inference_steps": 2, "cache_scope": "tenant"}
    alices = _finish(stack, ALICE, _submit(stack, ALICE, secret)["id"])
    sha = alices["images"][0]["sha256"]
    image = httpx.get(f"{stack.api_url}/v1/images/{sha}", headers=ALICE)
    assert image.status_code == 200 and image.headers["Cache-Control"].startswith("private"), image.headers
    assert httpx.get(f"{stack.api_url}/v1/images/{sha}", headers=BOB).status_code == 404, "bob reads alice's own"
    for scope in ("tenant", "deployment"):
        bobs = _submit(stack, BOB, {**secret, "cache_scope": scope})
        assert bobs["cached"] == 0 and bobs["status"] == "queued", f"bob learns alice asked ({scope} scope)"
        httpx.delete(f"{stack.api_url}/v1/jobs/{bobs['id']}", headers=BOB)
    again = _submit(stack, ALICE, secret)
    assert again["status"] == "succeeded" and again["cached"] == 1, "her own cache still serves her"

    shared = {"prompts": ["a picture for everyone"], "num_inference_steps": 2}
    _finish(stack, ALICE, _submit(stack, ALICE, shared)["id"])
    bobs = _submit(stack, BOB, shared)
    assert bobs["status"] == "succeeded" and bobs["cached"] == 1, "the deployment scope is shared by default"
    assert httpx.get(f"{stack.api_url}{bobs['images'][0]['url']}", headers=BOB).status_code == 200

    with _api(stack, tmp_path, GIFT_CACHE_SCOPE="tenant") as private_api:
        bobs = httpx.post(f"{private_api}/v1/jobs", json=shared, headers=BOB).json()
        assert bobs["cached"] == 0, "GIFT_CACHE_SCOPE=tenant makes a job that names no scope private"
        httpx.delete(f"{private_api}/v1/jobs/{bobs['id']}", headers=BOB)


@contextlib.contextmanager
def _api(stack, tmp_path, **env: str) -> Iterator[str]:
    """A second API process on the stack's Redis with other settings."""
    port = free_port()
    args = [sys.executable, "-m", "services.cli", "generator", "serve", "--port", str(port)]
    process = Process("api2", args, tmp_path / "api2.log", {**stack.env, "GIFT_REDIS_URL": stack.redis_url, **env})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "API", process.popen, process.log)
        yield url
    finally:
        process.stop()
