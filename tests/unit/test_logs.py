"""The JSON log lines and the ids they carry: a request's (middleware.RequestIds), a job's, a worker's."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import httpx
import pytest

from services.generator import logs
from services.generator.api.middleware import RequestIds


def _line(message: str = "job done", exc_info: bool = False) -> dict[str, object]:
    record = logging.LogRecord("gift.worker", logging.INFO, __file__, 1, message, None, None)
    if exc_info:
        try:
            raise ValueError("boom")
        except ValueError:
            record.exc_info = sys.exc_info()
    return json.loads(logs.JsonFormatter().format(record))


@pytest.fixture(autouse=True)
def no_process_ids(monkeypatch):
    monkeypatch.setattr(logs, "_process", {})


def test_a_line_carries_the_ids_of_its_context_and_of_its_process():
    logs.set_process_fields(worker_id="w1")
    with logs.bound(job_id="j1", tenant="alice", request_id=None):
        with logs.bound(job_ids=["j1", "j2"]):
            inner = _line("pipeline call")
        outer = _line()
    after = _line()
    assert (inner["message"], inner["job_ids"], inner["job_id"], inner["worker_id"]) == (
        "pipeline call",
        ["j1", "j2"],
        "j1",
        "w1",
    )
    assert "request_id" not in inner, "an id given as None is left out"
    assert "job_ids" not in outer and outer["tenant"] == "alice"
    assert after.keys() == {"time", "level", "logger", "message", "worker_id"}, "the block's ids end with it"
    assert (after["level"], after["logger"]) == ("INFO", "gift.worker")


def test_a_line_holds_its_exception_s_trace():
    line = _line(exc_info=True)
    assert "ValueError: boom" in str(line["exception"])


async def _answer(scope, receive, send):
    body = json.dumps({"request_id": logs.current("request_id")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-7f3a", True),
        ("proxy.id:42_x", True),
        (None, False),
        ("a b", False),
        ("x" * 65, False),
        ("id\r\nforged", False),
    ],
)
def test_a_request_id_is_the_caller_s_plain_one_or_a_new_one(sent, kept):
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=RequestIds(_answer))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/", headers={"X-Request-ID": sent} if sent else {})

    answer = asyncio.run(call())
    request_id = answer.headers["X-Request-ID"]
    assert answer.json()["request_id"] == request_id, "the request's lines carry the id its answer names"
    assert (request_id == sent) is kept
    assert kept or len(request_id) == 32
