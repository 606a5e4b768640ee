"""The API and gift_common's client install from the lock's `api` role and serve without torch.

A fresh virtual environment gets exactly requirements/api.txt (hashed, no dependency resolution) and the project
itself (not editable); the API runs from it against a real redis-server, and the client, also from it, talks to it
over HTTP. The trainer's run configs are checked there too.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.stack import Process, RedisServer, free_port, wait_until
from services.testing.installs import ROOT, fresh_environment, run_checked

pytestmark = pytest.mark.integration

# Run in the torch-free environment: the client's round trip through the API, then where torch stands.
CLIENT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys
    from gift_common.client import GeneratorClient, GeneratorHTTPError
    from gift_common.schemas import JobRequest, JobState

    with GeneratorClient(sys.argv[1], retries=0) as client:
        assert client.models() == [], client.models()
        job = client.submit(JobRequest(prompts=["a red circle"]))  # the default model waits for a worker
        assert client.status(job.id).status is JobState.queued
        assert client.cancel(job.id).status is JobState.cancelled
        try:
            client.submit(JobRequest(prompts=["a red circle"], model="no-such-model"))
        except GeneratorHTTPError as error:
            assert error.status_code == 422 and "no-such-model" in str(error), error
        else:
            raise AssertionError("an unknown model was accepted")
    assert "torch" not in sys.modules and importlib.util.find_spec("torch") is None
    print("client round trip without torch: ok")
    """
)


@pytest.fixture(scope="module")
def api_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the `api` role from the lock and the project, nothing else: its bin folder."""
    return fresh_environment(tmp_path_factory.mktemp("api-role"), ["api"], [ROOT])


@pytest.fixture
def api_url(api_env: Path, tmp_path: Path) -> Iterator[str]:
    """The API served by the torch-free environment's `gift` command against a private redis-server."""
    redis_server = RedisServer(tmp_path / "redis").start()
    port = free_port()
    env = {"GIFT_REDIS_URL": redis_server.url, "PYTHONPATH": ""}  # the environment's own install, not this tree
    api = Process("api", [str(api_env / "gift"), "generator", "serve", "--port", str(port)], tmp_path / "api.log", env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "generator API", api.popen, api.log)
        yield url
    finally:
        api.stop()
        redis_server.stop()


def test_torch_is_absent_from_the_api_role(api_env: Path) -> None:
    result = subprocess.run([api_env / "python", "-c", "import torch"], capture_output=True, text=True, cwd=api_env)
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr


def test_client_and_api_run_without_torch(api_env: Path, api_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    result = run_checked([api_env / "python", "-c", CLIENT_SCRIPT, api_url], cwd=api_env, env=env)
    assert "client round trip without torch: ok" in result.stdout


def test_a_run_config_is_checked_where_torch_is_not_installed(api_env: Path, tmp_path: Path) -> None:
    """The trainer's config names registered kinds; their implementations, torch among them, load when a run starts."""
    script = "from services.trainer.config import load_config; print(len(load_config('mtil_order1').tasks))"
    result = run_checked([api_env / "python", "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert result.stdout.strip() == "11"


def test_the_installed_api_serves_the_console(api_url: str) -> None:
    """The console's static files ship in the package (package data), not only in a checkout."""
    page = httpx.get(f"{api_url}/ui/")
    assert page.status_code == 200 and '<script src="console.js">' in page.text
    assert httpx.get(f"{api_url}/ui/console.js").status_code == 200
