"""Webhooks: a real receiving HTTP server on a free port that fails the first attempts, a real API, worker, Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from gift_common.schemas import JobState
from services.stack import LocalStack
from services.testing.generator import wait_for

pytestmark = pytest.mark.integration
SECRET = "s3cret"
FAILURES = {"/flaky": 2, "/broken": 1000}  # path -> how many POSTs it answers 500 before it answers 200


class Receiver(ThreadingHTTPServer):
    """Records every POST as (path, headers, body, status answered)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def to(self, path: str) -> list[tuple[str, dict[str, str], bytes, int]]:
        with self.lock:
            return [post for post in self.posts if post[0] == path]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            earlier = sum(1 for post in self.server.posts if post[0] == self.path)
            status = 500 if earlier < FAILURES.get(self.path, 0) else 200
            self.server.posts.append((self.path, dict(self.headers), body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _submit(stack: LocalStack, key: str, **body: object) -> httpx.Response:
    body = {"prompts": ["a ring", "a dot"], "seed": uuid.uuid4().int % 2**62, "num_inference_steps": 2, **body}
    return httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})


def test_a_webhook_is_signed_retried_with_backoff_and_bounded(
    make_stack: Callable[..., LocalStack], receiver: Receiver
):
    stack = make_stack(GIFT_API_KEYS="alice:key-a,bob:key-b", GIFT_WEBHOOK_SECRETS=f"alice:{SECRET}",
                       GIFT_WEBHOOK_ATTEMPTS="4", GIFT_WEBHOOK_BACKOFF_SECONDS="0.2")  # fmt: skip
    seed = uuid.uuid4().int % 2**62
    flaky = _submit(stack, "key-a", seed=seed, callback_url=receiver.url("/flaky")).json()["id"]
    broken = _submit(stack, "key-a", callback_url=receiver.url("/broken")).json()["id"]
    alice = GeneratorClient(stack.api_url, api_key="key-a")
    final = alice.wait(flaky, timeout=120, progress=False)
    assert alice.wait(broken, timeout=120, progress=False).status == JobState.succeeded

    wait_for(lambda: len(receiver.to("/flaky")) == 3, 60, "the third POST of the flaky receiver's webhook")
    wait_for(lambda: len(receiver.to("/broken")) == 4, 60, "GIFT_WEBHOOK_ATTEMPTS POSTs to the broken receiver")
    posts = receiver.to("/flaky")
    assert [status for *_, status in posts] == [500, 500, 200]
    for _, headers, body, _ in posts:
        signed = f"{headers['X-Gift-Timestamp']}.".encode() + body
        expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Gift-Signature"], f"sha256={expected}")
        assert headers["Content-Type"] == "application/json"
        sent = json.loads(body)
        assert sent["id"] == flaky and sent["status"] == "succeeded" and len(sent["images"]) == 2
        assert sent == json.loads(final.model_dump_json())

    cached = _submit(stack, "key-a", seed=seed, callback_url=receiver.url("/cached")).json()
    assert cached["status"] == "succeeded", "every image cached: the job ends at submission"
    wait_for(lambda: len(receiver.to("/cached")) == 1, 60, "the webhook of a job that ended at submission")
    assert json.loads(receiver.to("/cached")[0][2])["cached"] == 2

    bob = _submit(stack, "key-b", callback_url=receiver.url("/flaky"))
    assert bob.status_code == 422 and bob.json()["detail"].startswith("callback_url: tenant 'bob' has no webhook")
    bad = _submit(stack, "key-a", callback_url="ftp://127.0.0.1/x")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "callback_url"]
    cancelled = _submit(stack, "key-a", callback_url=receiver.url("/cancelled"), prompts=["x"] * 64).json()["id"]
    alice.cancel(cancelled)
    wait_for(lambda: len(receiver.to("/cancelled")) == 1, 60, "the webhook of a cancelled job")
    assert json.loads(receiver.to("/cancelled")[0][2])["status"] == "cancelled"
    assert len(receiver.to("/broken")) == 4, "no POST beyond GIFT_WEBHOOK_ATTEMPTS"
    _assert_the_give_up_is_recorded(stack, broken, receiver.url("/broken"))
    alice.close()


def _assert_the_give_up_is_recorded(stack: LocalStack, job_id: str, url: str) -> None:
    """Only the webhook that ran out of attempts is in the given-up stream and counted on /metrics."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    wait_for(lambda: client.xlen(redis_keys.WEBHOOKS_GIVEN_UP) > 0, 30, "the give-up recorded after the last POST")
    given_up = client.xrange(redis_keys.WEBHOOKS_GIVEN_UP)
    assert [fields for _, fields in given_up] == [
        {"job": job_id, "tenant": "alice", "callback_url": url, "attempts": "4", "error": "answered 500"}
    ]
    metrics = httpx.get(f"{stack.api_url}/metrics").text.splitlines()
    assert "gift_webhooks_given_up_total 1.0" in metrics, [line for line in metrics if "webhooks" in line]
