"""The adaptation queue on a real redis-server, without a model: who takes a job, when a dead worker's job is
taken over, when one that keeps killing its workers fails, and that a cancel and a finish end a job once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gift_common import redis_keys
from gift_common.schemas import JobState
from services.generator import replies
from services.generator.adaptations import Adaptation, end_args, end_keys, status_of
from services.generator.store import END_ADAPTATION
from services.generator.worker.adaptation_queue import AdaptationQueue
from services.stack import RedisServer

CLAIM_SECONDS = 0.3


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path / "redis").start()
    yield server.url
    server.stop()


def _queue(url: str, consumer: str, max_deliveries: int = 5) -> AdaptationQueue:
    text, data = redis.Redis.from_url(url, decode_responses=True), redis.Redis.from_url(url)
    return AdaptationQueue(text, data, consumer, CLAIM_SECONDS, max_deliveries, ttl=60)


def _submit(url: str, number: int = 0) -> Adaptation:
    """What the API writes for a job: archive, record, stream entry."""
    job = Adaptation(f"ad-{number:032x}", "alice", "m", 10, 2, 1e-3, 0, False, None)
    client = redis.Redis.from_url(url)
    client.set(redis_keys.adaptation_archive(job.id, job.tenant), b"tar bytes")
    client.hset(redis_keys.adaptation(job.id, job.tenant), mapping=job.record())  # type: ignore[arg-type]
    client.xadd(redis_keys.adaptations(job.model), {"id": job.id, "tenant": job.tenant})
    return job


def _status(url: str, job: Adaptation) -> tuple[str, int]:
    reply = redis.Redis.from_url(url, decode_responses=True).hgetall(redis_keys.adaptation(job.id, job.tenant))
    status = status_of(replies.text_hash(reply))
    return status.status.value, status.step


def test_one_worker_takes_a_job_and_another_takes_it_over_only_once_it_is_left(url: str) -> None:
    first, second = _queue(url, "first"), _queue(url, "second")
    first.ensure_group("m")
    job = _submit(url)
    held = first.take("m")
    assert held is not None and held.job == job and first.archive(held) == b"tar bytes"
    assert second.take("m") is None, "held: not another's"
    time.sleep(CLAIM_SECONDS * 2)
    first.keep(held)  # the heartbeat of a live worker
    assert second.take("m") is None, "kept claimed by its heartbeat"
    assert first.progress(held, 3) and _status(url, job) == ("running", 3)
    first.save_checkpoint(held, b"checkpoint at 3")
    time.sleep(CLAIM_SECONDS * 2)  # no heartbeat: the worker died
    taken = second.take("m")
    assert taken is not None and taken.job == job and second.checkpoint(taken) == b"checkpoint at 3"
    second.succeed(taken, "a" * 64)
    assert _status(url, job) == ("succeeded", 10)
    client = redis.Redis.from_url(url)
    assert client.exists(*end_keys(job.id, job.tenant)[1:]) == 0, "archive and checkpoint go with the job"
    assert client.xlen(redis_keys.adaptations("m")) == 0 and client.ttl(end_keys(job.id, job.tenant)[0]) > 0


def test_a_job_whose_workers_keep_dying_fails_saying_so(url: str) -> None:
    queue = _queue(url, "w", max_deliveries=2)
    queue.ensure_group("m")
    job = _submit(url)
    assert queue.take("m") is not None  # delivery 1; then the worker dies
    time.sleep(CLAIM_SECONDS * 2)
    assert queue.take("m") is not None, "taken over: delivery 2, the limit; that worker dies too"
    time.sleep(CLAIM_SECONDS * 2)
    assert queue.take("m") is None, "delivered as often as allowed and never finished: it fails"
    fields = redis.Redis.from_url(url, decode_responses=True).hgetall(redis_keys.adaptation(job.id, job.tenant))
    assert fields["status"] == "failed" and "taken up 2 times and never finished" in fields["error"]


def test_a_cancel_stops_progress_and_a_finish_after_it_changes_nothing(url: str) -> None:
    queue = _queue(url, "w")
    queue.ensure_group("m")
    job = _submit(url)
    held = queue.take("m")
    assert held is not None and queue.progress(held, 1)
    client = redis.Redis.from_url(url, decode_responses=True)
    keys = end_keys(job.id, job.tenant)
    assert client.eval(END_ADAPTATION, len(keys), *keys, *end_args(job.id, JobState.cancelled, 60)) == "cancelled"
    assert not queue.progress(held, 2), "the worker is told to stop"
    queue.succeed(held, "b" * 64)
    assert _status(url, job) == ("cancelled", 1)
    assert "adapter" not in client.hgetall(keys[0])
    assert client.eval(END_ADAPTATION, len(keys), *keys, *end_args(job.id, JobState.cancelled, 60)) == "cancelled"


def test_an_entry_of_a_job_cancelled_while_queued_is_dropped_unread(url: str) -> None:
    queue = _queue(url, "w")
    queue.ensure_group("m")
    job = _submit(url)
    keys = end_keys(job.id, job.tenant)
    redis.Redis.from_url(url).eval(END_ADAPTATION, len(keys), *keys, *end_args(job.id, JobState.cancelled, 60))
    assert queue.take("m") is None
    assert redis.Redis.from_url(url).xlen(redis_keys.adaptations("m")) == 0
