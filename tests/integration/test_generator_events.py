"""GET /v1/jobs/{id}/events: Server-Sent Events from a real API, worker and Redis, read by the project's client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gift_common.client import GeneratorClient, JobEvent
from gift_common.schemas import JobRequest, JobState
from services.stack import LocalStack

pytestmark = pytest.mark.integration


def _fresh_request(images: int) -> JobRequest:
    """Images no earlier job made (a random seed), so a worker records them one batch at a time."""
    return JobRequest(prompts=[f"shape {i}" for i in range(images)], seed=uuid.uuid4().int % 2**62,
                      num_inference_steps=4)  # fmt: skip


def _raw_events(response: httpx.Response) -> Iterator[tuple[str | None, str]]:
    """(id, event name) of each event of an open stream, and (None, comment) of each comment line."""
    event_id, name = None, None
    for line in response.iter_lines():
        if line.startswith(":"):
            yield None, line
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif not line and name:
            yield event_id, name
            event_id, name = None, None


def test_a_job_streams_its_progress_each_image_once_and_its_end(client: GeneratorClient):
    job = client.submit(_fresh_request(20))
    events = list(client.events(job.id))
    final = client.status(job.id)

    images = [event for event in events if event.name == "image"]
    assert sorted(event.data.index for event in images) == list(range(20))
    assert [event.id for event in images] == [str(n) for n in range(1, 21)]
    assert {(e.data.index, e.data.sha256, e.data.url) for e in images} == {
        (i.index, i.sha256, i.url) for i in final.images
    }
    done = [event.data["done"] for event in events if event.name == "progress"]
    assert (
        done == sorted(done) and done[-1] == 20 and all(e.data["total"] == 20 for e in events if e.name == "progress")
    )
    assert events[-1].name == "end" and events[-1].id == "end"
    assert events[-1].data.status == JobState.succeeded and events[-1].data.done == 20
    assert [event.name for event in events].count("end") == 1


def test_a_reconnect_with_last_event_id_gets_the_rest_without_repeats(client: GeneratorClient, stack: LocalStack):
    job = client.submit(_fresh_request(16))
    first: list[str] = []
    with httpx.stream("GET", f"{stack.api_url}/v1/jobs/{job.id}/events", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for event_id, name in _raw_events(response):
            if name == "image":
                first.append(event_id)
            if len(first) == 2:
                break  # the client goes away mid-stream
    assert first == ["1", "2"]
    rest = [event for event in client.events(job.id, last_event_id="2") if event.name == "image"]
    assert [event.id for event in rest] == [str(n) for n in range(3, 17)]
    shown = {event.data.index for event in rest}
    assert len(shown) == 14

    whole = [event.data.index for event in client.events(job.id) if event.name == "image"]
    assert sorted(whole) == list(range(16)) and not set(whole[:2]) & shown
    after_end = httpx.get(f"{stack.api_url}/v1/jobs/{job.id}/events", headers={"Last-Event-ID": "end"})
    assert after_end.status_code == 204, "a reconnect after the end event is told to stop"


@pytest.fixture
def idle_stack(tmp_path: Path, model_home: Path) -> Iterator[LocalStack]:
    """Redis and an API with two tenants and no worker: a job stays queued; streams send keep-alive comments."""
    env = {"GIFT_HOME": str(model_home), "GIFT_API_KEYS": "alice:key-a,bob:key-b",
           "GIFT_EVENTS_KEEPALIVE_SECONDS": "0.2"}  # fmt: skip
    with LocalStack(tmp_path / "idle", env=env) as stack:
        assert stack.redis is not None
        stack.redis.start()
        stack.start_api()
        yield stack


def test_a_quiet_stream_keeps_alive_and_ends_when_the_job_is_cancelled(idle_stack: LocalStack):
    alice = GeneratorClient(idle_stack.api_url, api_key="key-a", retries=0)
    job = alice.submit(_fresh_request(4))
    url = f"{idle_stack.api_url}/v1/jobs/{job.id}/events"
    seen: list[tuple[str | None, str]] = []
    with httpx.stream("GET", url, headers={"Authorization": "Bearer key-a"}, timeout=30) as response:
        for event_id, name in _raw_events(response):
            seen.append((event_id, name))
            if [name for _, name in seen].count(": keep-alive") == 3:
                alice.cancel(job.id)
    names = [name for _, name in seen]
    assert names[0] == "progress" and names.count(": keep-alive") >= 3
    assert names[-1] == "end" and "image" not in names

    bob = {"Authorization": "Bearer key-b"}
    assert httpx.get(url, headers=bob).status_code == 404, "another tenant's job is not found"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer key-a", "Last-Event-ID": "x"}).status_code == 422
    ended = list(alice.events(job.id))
    assert [event.name for event in ended] == ["progress", "end"] and ended[-1].data.status == JobState.cancelled
    assert isinstance(ended[0], JobEvent) and ended[0].data == {"status": "cancelled", "done": 0, "total": 4,
                                                                "cached": 0}  # fmt: skip
    alice.close()
