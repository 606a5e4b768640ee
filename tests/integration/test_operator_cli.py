"""The operator's commands (``gift generate``, ``gift jobs``, ``gift workers``) as a person runs them: the console
script as a process, against a real stack with tenants and an admin."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.stack import free_port
from services.testing.generator import IDLE_MODEL

pytestmark = pytest.mark.integration


def gift(url: str, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"GIFT_GENERATOR_URL": url, **({"GIFT_API_KEY": key} if key else {})}
    command = [sys.executable, "-m", "services.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**_base_env(), **env})


def _base_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("GIFT_")}


def one_line_error(run: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run
    assert len(lines) == 1 and lines[0].startswith("gift: error: "), run.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.fixture(scope="module")
def api(tenants_api: str) -> str:
    return tenants_api


def test_generate_writes_the_images_and_prints_the_job(api: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = gift(api, "alice-key", "generate", "a red circle on grass", "-n", "4", "--out", str(out), "--steps", "30")
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.splitlines()[0].removeprefix("job ")
    assert f"job {job_id} succeeded: 4 images" in run.stdout
    assert f"job {job_id}" in run.stderr and "4/4" in run.stderr, "the progress bar"
    job = httpx.get(f"{api}/v1/jobs/{job_id}", headers={"Authorization": "Bearer alice-key"}).json()
    written = sorted(out.glob("*.png"))
    assert [path.name for path in written] == [f"{i:03d}-seed{i}.png" for i in range(4)]
    shas = [hashlib.sha256(path.read_bytes()).hexdigest() for path in written]
    assert shas == [image["sha256"] for image in job["images"]]

    listed = gift(api, "alice-key", "jobs", "list")
    assert listed.returncode == 0 and job_id in listed.stdout and "succeeded" in listed.stdout
    assert job_id not in gift(api, "bob-key", "jobs", "list").stdout, "bob lists only his own"
    shown = gift(api, "alice-key", "jobs", "show", job_id)
    assert f"job {job_id}: succeeded, 4/4 images" in shown.stdout and "a red circle on grass" in shown.stdout


def test_jobs_list_show_cancel_and_the_admins_view(api: str) -> None:
    submitted = httpx.post(
        f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers={"Authorization": "Bearer bob-key"}
    )
    job_id = submitted.json()["id"]
    queued = gift(api, "bob-key", "jobs", "list", "--status", "queued")
    assert job_id in queued.stdout and "queued" in queued.stdout
    one_line_error(gift(api, "alice-key", "jobs", "cancel", job_id), "404", job_id)

    everyone = gift(api, "admin-key", "jobs", "list", "--all", "--limit", "1")
    assert everyone.returncode == 0, everyone.stderr
    assert job_id in everyone.stdout and "bob" in everyone.stdout and "more: gift jobs list --cursor" in everyone.stdout
    assert f"job {job_id}: queued" in gift(api, "admin-key", "jobs", "show", job_id, "--all").stdout
    cancelled = gift(api, "admin-key", "jobs", "cancel", job_id, "--all")
    assert f"job {job_id}: cancelled" in cancelled.stdout, cancelled
    assert job_id in gift(api, "bob-key", "jobs", "list", "--status", "cancelled").stdout


def test_workers_shows_the_fleet(api: str) -> None:
    run = gift(api, "alice-key", "workers")
    assert run.returncode == 0, run.stderr
    header, row = run.stdout.splitlines()[:2]
    assert header.split()[:4] == ["worker", "models", "device", "batch"]
    assert row.split()[1:4] == ["tinyworld", "cpu", "8"]


def test_a_wrong_key_a_server_down_and_bad_input_are_one_line_each(api: str) -> None:
    one_line_error(gift(api, "wrong", "jobs", "list"), "refused the key", "GIFT_API_KEY")
    one_line_error(gift(api, "alice-key", "jobs", "list", "--all"), "refused the key", "GIFT_ADMIN_KEYS")
    one_line_error(gift(api, None, "workers"), "refused the key")
    down = f"http://127.0.0.1:{free_port()}"
    one_line_error(gift(down, "alice-key", "jobs", "list"), "does not answer", down)
    secret_url = down.replace("http://", "http://ops:url-pw-7c1e@")
    refused = gift(secret_url, "alice-key", "jobs", "list")
    one_line_error(refused, "does not answer", down)
    assert "url-pw-7c1e" not in refused.stderr + refused.stdout
    one_line_error(gift(api, "alice-key", "jobs", "show", "f" * 32), "404", "not found")
    one_line_error(gift(api, "alice-key", "generate", "x", "--steps", "500", "--out", "/tmp/unused"), "less than")
