"""The clients' ``events``: parsing Server-Sent Events and resuming a cut stream, against httpx.MockTransport."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gift_common.client import AsyncGeneratorClient, GeneratorClient, GeneratorUnavailable, JobEvent
from gift_common.schemas import ImageInfo, JobStatus

BASE = "http://generator.test"
JOB = "ab" * 16
IMAGE = '{"index": %d, "prompt": "p", "seed": %d, "sha256": "%s", "url": "/v1/images/%s"}'
END = '{"id": "%s", "status": "succeeded", "total": 2, "done": 2, "cached": 0, "created_at": "2026-12-03T00:00:00Z"}'


def _image(index: int) -> str:
    sha = f"{index:064x}"
    return f"id: {index + 1}\nevent: image\ndata: {IMAGE % (index, index, sha, sha)}\n\n"


class CutOnce:
    """The first stream breaks after one image; the second must ask for the rest with Last-Event-ID."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.headers.get("Last-Event-ID"))
        if len(self.asked) == 1:
            body = ': keep-alive\n\nevent: progress\ndata: {"done": 0,\ndata: "total": 2}\n\n' + _image(0)
        else:
            body = _image(1) + f"id: end\nevent: end\ndata: {END % JOB}\n\n"
        return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})


def _check(events: list[JobEvent], server: CutOnce) -> None:
    assert [(event.name, event.id) for event in events] == [("progress", None), ("image", "1"), ("image", "2"),
                                                             ("end", "end")]  # fmt: skip
    assert events[0].data == {"done": 0, "total": 2}, "data lines of one event join with newlines"
    assert isinstance(events[1].data, ImageInfo) and events[2].data.index == 1
    assert isinstance(events[3].data, JobStatus) and events[3].data.done == 2
    assert server.asked == [None, "1"]


def test_sync_events_resume_after_a_cut_without_repeats():
    server = CutOnce()
    with GeneratorClient(BASE, transport=httpx.MockTransport(server), backoff=0) as client:
        _check(list(client.events(JOB)), server)


def test_async_events_resume_after_a_cut_without_repeats():
    server = CutOnce()

    async def collect() -> list[JobEvent]:
        async with AsyncGeneratorClient(BASE, transport=httpx.MockTransport(server), backoff=0) as client:
            return [event async for event in client.events(JOB)]

    _check(asyncio.run(collect()), server)


def test_a_stream_that_never_ends_gives_up_after_the_retries():
    def cut(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=": keep-alive\n\n", headers={"Content-Type": "text/event-stream"})

    client = GeneratorClient(BASE, transport=httpx.MockTransport(cut), retries=2, backoff=0)
    with client, pytest.raises(GeneratorUnavailable, match="after 3 attempts; last cause: the stream ended"):
        list(client.events(JOB))


def test_after_the_end_the_server_says_204_and_the_stream_stops():
    transport = httpx.MockTransport(lambda _request: httpx.Response(204))
    with GeneratorClient(BASE, transport=transport) as client:
        assert list(client.events(JOB, last_event_id="end")) == []
