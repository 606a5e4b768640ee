"""No secret in any log: the API and a worker against a Redis with a password, with API keys and a signed webhook."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from services.stack import LocalStack, Process, free_port, wait_until
from services.testing.generator import FAST_ENV

pytestmark = pytest.mark.integration

PASSWORD, KEY, SECRET, HOOK_PASSWORD = "redis-pw-8c1f", "api-key-5d2e", "hook-secret-9a7b", "hook-pw-3e6c"


class _Hook(BaseHTTPRequestHandler):
    """Answers the first POST 500 (so a retry and its error are logged), then 200."""

    posts: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if not self.posts else 200
        self.posts.append(status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _redis_with_password(directory: Path) -> tuple[Process, str]:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
            "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    return Process("redis", args, directory / "redis.log"), f"redis://:{PASSWORD}@127.0.0.1:{port}/0"


def test_logs_hold_no_key_password_or_secret(tmp_path, model_home, hook):
    (tmp_path / "redis").mkdir()
    redis_server, url = _redis_with_password(tmp_path / "redis")
    env = {"GIFT_HOME": str(model_home), **FAST_ENV, "GIFT_API_KEYS": f"alice:{KEY}",
           "GIFT_WEBHOOK_SECRETS": f"alice:{SECRET}", "GIFT_WEBHOOK_BACKOFF_SECONDS": "0.2"}  # fmt: skip
    try:
        with LocalStack(tmp_path / "stack", redis_url=url, env=env) as stack:
            stack.start(workers=1)
            callback = f"http://hook:{HOOK_PASSWORD}@127.0.0.1:{hook.server_address[1]}/done"
            auth = {"Authorization": f"Bearer {KEY}"}
            body = {"prompts": ["a red circle"], "num_inference_steps": 2, "callback_url": callback}
            job = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers=auth).json()
            done = httpx.get(f"{stack.api_url}/v1/jobs/{job['id']}?wait=30", headers=auth, timeout=60).json()
            assert done["status"] == "succeeded", done
            wait_until(lambda: _Hook.posts == [500, 200], 30, "the webhook's retry")
            assert httpx.get(f"{stack.api_url}/v1/models", headers={"Authorization": "Bearer wrong"}).is_client_error
        logs = {path: path.read_text(errors="replace") for path in tmp_path.rglob("*.log")}
        assert {path.name for path in logs} >= {"api.log", "worker0.log"}
        assert any("webhook of job" in text for text in logs.values()), "the webhook's lines are among those read"
        for path, text in logs.items():
            for secret in (PASSWORD, KEY, SECRET, HOOK_PASSWORD):
                assert secret not in text, f"{path.name} holds {secret}"
    finally:
        redis_server.stop()
