"""How the generator's processes start and stop, as real processes: signals, unreachable Redis, unserved models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from services.stack import LocalStack, Process, free_port, wait_until
from services.testing.generator import FAST_ENV

pytestmark = pytest.mark.integration

STOP_BOUND_SECONDS = 15  # a stop asked for must end the process within this, whatever Redis does
GIFT = [sys.executable, "-m", "services.cli"]


def _stopped_within(process: Process, seconds: float) -> int:
    try:
        return process.popen.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{process.name} still ran {seconds} s after it was told to stop") from None


def _log_lines(process: Process, text: str) -> list[str]:
    return [line for line in process.log.read_text(errors="replace").splitlines() if text in line]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_worker_that_cannot_reach_redis_stops_when_told(tmp_path, model_home, signum, status):
    env = {"GIFT_HOME": str(model_home), **FAST_ENV, "GIFT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    worker = Process("worker", [*GIFT, "generator", "worker"], tmp_path / "worker.log", env)
    wait_until(lambda: _log_lines(worker, "redis unavailable"), 120, "the worker's wait for Redis", worker.popen)
    worker.popen.send_signal(signum)
    assert _stopped_within(worker, STOP_BOUND_SECONDS) == status
    assert _log_lines(worker, "stopped before Redis answered"), worker.log.read_text()[-2000:]


def test_ctrl_c_finishes_the_batch_and_a_second_one_stops_at_once(make_stack):
    stack = make_stack(workers=1)
    (worker,) = stack.workers
    slow = {"prompts": ["a slow red circle"] * 8, "num_inference_steps": 200, "seed": 11}
    job = httpx.post(f"{stack.api_url}/v1/jobs", json=slow).json()
    wait_until(lambda: _log_lines(worker, f"job {job['id']}: started"), 60, "the worker to start the job")
    worker.popen.send_signal(signal.SIGINT)
    wait_until(lambda: _log_lines(worker, "Ctrl-C: finishing the batch"), 10, "the first Ctrl-C's log line")
    assert _log_lines(worker, "Ctrl-C again stops at once")
    worker.popen.send_signal(signal.SIGINT)
    assert _stopped_within(worker, STOP_BOUND_SECONDS) == 130
    assert _log_lines(worker, "Ctrl-C again: stopping now")


def test_serve_says_ready_once_listening_and_exits_130_on_ctrl_c(tmp_path, model_home):
    with LocalStack(tmp_path / "stack", env={"GIFT_HOME": str(model_home), **FAST_ENV}) as stack:
        stack.redis.start()  # type: ignore[union-attr]  # a stack made without a URL has its own
        api = stack.start_api()
        wait_until(lambda: _log_lines(api, "generator API ready"), 30, "the ready line", api.popen)
        (ready,) = _log_lines(api, "generator API ready")
        assert f"on http://127.0.0.1:{stack.api_port}" in ready and "answers" in ready, ready
        api.popen.send_signal(signal.SIGINT)
        assert _stopped_within(api, STOP_BOUND_SECONDS) == 130


def test_a_job_for_a_model_no_live_worker_serves_is_refused_naming_both(tmp_path, model_home):
    from tinyworld.pipeline import default_model_dir

    with LocalStack(tmp_path / "stack", env={"GIFT_HOME": str(model_home), **FAST_ENV}) as stack:
        stack.redis.start()  # type: ignore[union-attr]  # a stack made without a URL has its own
        stack.start_api()
        before = httpx.post(f"{stack.api_url}/v1/jobs", json={"prompts": ["a red circle"]})
        assert before.status_code == 202, "no worker at all: the service is starting, the job waits for one"
        stack.start_worker(["--model", f"mini={default_model_dir(model_home)}"])
        stack.wait_ready()
        refused = httpx.post(f"{stack.api_url}/v1/jobs", json={"prompts": ["a blue circle"]})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"] == "model: no live worker serves 'tinyworld'; live workers serve: mini"
        served = httpx.post(f"{stack.api_url}/v1/jobs", json={"prompts": ["a red circle"], "model": "mini"})
        assert served.status_code == 202, served.text


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["generator", "worker", "--batch-size", "-3"], {}, "--batch-size: Input should be greater than or equal to 1"),
        (["generator", "worker", "--batch-size", "0"], {}, "--batch-size: Input should be greater than or equal to 1"),
        (["generator", "worker"], {"GIFT_BATCH_SIZE": "0"}, "GIFT_BATCH_SIZE: Input should be greater than or"),
        (["generator", "serve"], {"GIFT_REDIS_URL": "notaurl"}, "GIFT_REDIS_URL: must start with redis://"),
        (["generator", "serve"], {"GIFT_API_KEYS": "alice-secret"}, "GIFT_API_KEYS: entry 1 is not of the form"),
        (["rehearsal", "fixtures", "--out", "{file}"], {}, "is a file, not a folder"),
        (["generator", "worker", "--model", "bad={bad_pipeline}"], {}, "is not a loadable diffusers pipeline"),
    ],
)
def test_a_bad_setting_or_input_is_one_line_and_status_2(tmp_path, model_home, args, env, named):
    (tmp_path / "file").write_text("not a folder")
    bad_pipeline = tmp_path / "bad-pipeline"
    bad_pipeline.mkdir()
    (bad_pipeline / "model_index.json").write_text("{ not json")
    args = [arg.format(file=tmp_path / "file", bad_pipeline=bad_pipeline) for arg in args]
    environment = {"GIFT_HOME": str(model_home), "GIFT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", **env}
    done = subprocess.run([*GIFT, *args], env={**_base_env(), **environment}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith(("gift: error: ", "gift ")) and named in line, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "alice-secret" not in done.stderr, done.stderr[-3000:]
    assert len([row for row in done.stderr.splitlines() if "error" in row]) == 1, done.stderr[-3000:]


def test_a_client_ignores_the_servers_malformed_settings():
    script = "from gift_common.client import GeneratorClient; print(GeneratorClient().base_url)"
    env = {**_base_env(), "GIFT_API_KEYS": "malformed", "GIFT_CLAIM_TIMEOUT_SECONDS": "abc", "GIFT_BATCH_SIZE": "0"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "http://127.0.0.1:8000", done.stderr


def test_a_generator_url_without_its_scheme_is_named_at_once():
    script = "from gift_common.client import GeneratorClient; GeneratorClient()"
    env = {**_base_env(), "GIFT_GENERATOR_URL": "127.0.0.1:8000"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, "made without a request: the scheme is checked before anything is retried"
    assert "GIFT_GENERATOR_URL: must start with http:// or https://" in done.stderr, done.stderr


def _base_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("GIFT_")}
