"""One run of the API and a worker with every secret set (API keys, a Redis password, a webhook's secret and
user:password, an OTLP collector's user:password), JSON logs and traces sent to a real OTLP receiver on a local port:
no log line or span holds a secret; one job is one trace, from the API request through the queue to the worker's
pipeline call and the webhook back; every log line about the job carries its request id, tenant, job id and worker.

A JSON line holds everything a text line does (the message, an exception's trace) and the ids besides, so scanning
JSON logs covers the text format's content too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from services.generator import tracing
from services.stack import LocalStack, Process, free_port, wait_until
from services.testing.generator import FAST_ENV
from services.testing.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

PASSWORD, KEY, SECRET, HOOK_PASSWORD = "redis-pw-8c1f", "api-key-5d2e", "hook-secret-9a7b", "hook-pw-3e6c"
OTLP_PASSWORD = "otlp-pw-41d0"
REQUEST_ID = "req-7f3a"
CLIENT_TRACE, CLIENT_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"  # the caller's own trace
SPANS = {"POST /v1/jobs", tracing.ENQUEUE, tracing.BATCH, tracing.WEBHOOK}


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


@dataclass(frozen=True)
class Run:
    job_id: str
    logs: dict[Path, str]  # every log file of the run, read after every process stopped
    spans: list[ReceivedSpan]  # every span received
    first: dict[str, ReceivedSpan]  # the job's trace: the first span of each name in SPANS


def _redis_with_password(directory: Path) -> tuple[Process, str]:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
            "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    return Process("redis", args, directory / "redis.log"), f"redis://:{PASSWORD}@127.0.0.1:{port}/0"


@pytest.fixture(scope="module")
def hook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, model_home: Path, hook: ThreadingHTTPServer) -> Iterator[Run]:
    """One job with a webhook that fails once, sent with the caller's request id and traceparent; a wrong key."""
    directory = tmp_path_factory.mktemp("secrets")
    (directory / "redis").mkdir()
    redis_server, url = _redis_with_password(directory / "redis")
    try:
        with OtlpReceiver() as receiver:
            collector = receiver.endpoint.replace("http://", f"http://otlp:{OTLP_PASSWORD}@")
            env = {"GIFT_HOME": str(model_home), **FAST_ENV, "GIFT_API_KEYS": f"alice:{KEY}",
                   "GIFT_WEBHOOK_SECRETS": f"alice:{SECRET}", "GIFT_WEBHOOK_BACKOFF_SECONDS": "0.2",
                   "GIFT_LOG_FORMAT": "json", "GIFT_OTLP_ENDPOINT": collector,
                   "OTEL_BSP_SCHEDULE_DELAY": "50"}  # fmt: skip
            with LocalStack(directory / "stack", redis_url=url, env=env) as stack:
                stack.start(workers=1)
                callback = f"http://hook:{HOOK_PASSWORD}@127.0.0.1:{hook.server_address[1]}/done"
                headers = {"Authorization": f"Bearer {KEY}", "X-Request-ID": REQUEST_ID,
                           "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}  # fmt: skip
                body = {
                    "prompts": ["a red circle", "a blue square"],
                    "num_inference_steps": 2,
                    "callback_url": callback,
                }
                answer = httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers=headers)
                assert answer.status_code == 202 and answer.headers["X-Request-ID"] == REQUEST_ID, answer.text
                job_id = answer.json()["id"]
                done = httpx.get(f"{stack.api_url}/v1/jobs/{job_id}?wait=30", headers=headers, timeout=60).json()
                assert done["status"] == "succeeded", done
                wait_until(lambda: _Hook.posts == [500, 200], 30, "the webhook's retry")
                assert httpx.get(
                    f"{stack.api_url}/v1/models", headers={"Authorization": "Bearer wrong"}
                ).is_client_error
                first = receiver.trace(CLIENT_TRACE, SPANS, timeout=30)
            logs = {path: path.read_text(errors="replace") for path in directory.rglob("*.log")}
            yield Run(job_id, logs, list(receiver.spans), first)
    finally:
        redis_server.stop()


def _lines(run: Run, name: str) -> list[dict[str, Any]]:
    """The JSON lines of the service's own loggers in ``name`` (another library's lines, if any, are left out)."""
    (text,) = [text for path, text in run.logs.items() if path.name == name]
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") or " gift." in line]


def test_no_log_line_or_span_holds_a_key_password_or_secret(run):
    assert {path.name for path in run.logs} >= {"api.log", "worker0.log"}
    assert any("webhook of job" in text for text in run.logs.values()), "the webhook's lines are among those read"
    assert any("traces go to http://127.0.0.1:" in text for text in run.logs.values()), "the collector's URL was logged"
    spans = repr(run.spans)
    for secret in (PASSWORD, KEY, SECRET, HOOK_PASSWORD, OTLP_PASSWORD):
        for path, text in run.logs.items():
            assert secret not in text, f"{path.name} holds {secret}"
        assert secret not in spans, f"a span holds {secret}"


def test_one_job_is_one_trace_from_the_request_to_the_worker_and_the_webhook(run):
    request, enqueue, batch = run.first["POST /v1/jobs"], run.first[tracing.ENQUEUE], run.first[tracing.BATCH]
    assert (request.service, request.kind, request.parent_id) == ("gift-api", "SERVER", CLIENT_SPAN)
    assert request.attributes["http.response.status_code"] == 202
    assert request.attributes["gift.tenant"] == "alice" and request.attributes["gift.request_id"] == REQUEST_ID
    assert (enqueue.service, enqueue.kind, enqueue.parent_id) == ("gift-api", "PRODUCER", request.span_id)
    assert enqueue.attributes["gift.job_id"] == run.job_id
    assert (batch.service, batch.kind, batch.parent_id) == ("gift-worker", "CONSUMER", enqueue.span_id)
    assert batch.attributes["gift.job_id"] == run.job_id and batch.attributes["gift.job.images"] == 2
    assert "job succeeded" in batch.events and not batch.error
    webhooks = [span for span in run.spans if span.name == tracing.WEBHOOK and span.trace_id == CLIENT_TRACE]
    assert [(span.service, span.kind, span.parent_id) for span in webhooks] == [
        ("gift-api", "CLIENT", enqueue.span_id)
    ] * 2
    assert [span.error for span in webhooks] == [True, False], "the first POST was answered 500"


def test_every_log_line_about_the_job_carries_its_ids(run):
    api, worker = _lines(run, "api.log"), _lines(run, "worker0.log")
    worker_id = run.first[tracing.BATCH].attributes["gift.worker_id"]
    about_the_job = [line for line in api + worker if run.job_id in line["message"]]
    assert {line["logger"] for line in about_the_job} == {"gift.api", "gift.worker"}, about_the_job
    assert len(about_the_job) >= 5, about_the_job  # accepted, started, succeeded, the webhook's retry and delivery
    for line in about_the_job:
        assert line["job_id"] == run.job_id, line
        assert (line["tenant"], line["request_id"]) == ("alice", REQUEST_ID), line
        assert line["logger"] == "gift.api" or line["worker_id"] == worker_id, line
        assert line.get("trace_id") == CLIENT_TRACE or "started" in line["message"], line  # before a span opens
    accepted = next(line for line in api if "accepted" in line["message"])
    assert accepted["span_id"] == run.first["POST /v1/jobs"].span_id


def test_a_stopping_api_sends_its_last_spans_and_waits_not_long_for_an_absent_collector(tmp_path):
    """Spans wait to leave in batches (here for up to ten minutes); an API that is stopped sends them first, as its
    server ends the process by the signal that stopped it, where no exit handler runs. One whose collector does not
    answer (its batches retried for up to 10 s) stops within tracing.CLOSE_SECONDS all the same."""
    with OtlpReceiver() as receiver:
        stack, apis = LocalStack(tmp_path, env={"GIFT_HOME": str(tmp_path)}), []
        try:
            assert stack.redis is not None
            stack.redis.start()
            env = {"GIFT_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
            apis.append(stack.start_another_api("held", env))
            apis.append(stack.start_another_api("absent", {"GIFT_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}))
            (held, url), (absent, _) = apis
            for _ in range(3):
                httpx.get(f"{url}/healthz").raise_for_status()
            assert receiver.spans == [], "nothing was sent before the stop"
            held.stop()
            assert [span.name for span in receiver.spans].count("GET /healthz") >= 3
            started = time.monotonic()
            absent.stop()
            assert time.monotonic() - started < tracing.CLOSE_SECONDS + 2
        finally:
            for api, _ in apis:
                api.stop()
            stack.stop()
