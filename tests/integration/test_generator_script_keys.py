"""Every key a Lua script touches is among the KEYS it was called with, so a Redis Cluster can serve the scripts.

Checked as Redis itself sees it: a MONITOR connection records a run of every script of the generator (a submission
with an idempotency key and its retry, a cache hit, a worker's round, records, a failure, a cancel, the metrics, the
webhook retries, an adaptation job's steps and end), and Redis' own ``COMMAND GETKEYS`` names the keys of each
command a script ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.asyncio

from gift_common import redis_keys
from gift_common.content_key import request_image_key
from gift_common.schemas import JobRequest, JobState
from gift_common.settings import Settings
from services.generator import job_index, store
from services.generator.adaptations import Adaptation
from services.generator.api import jobs as api_jobs
from services.generator.api import webhooks
from services.generator.api.events import JobEvents
from services.generator.api.listings import JobListing
from services.generator.worker.adaptation_queue import AdaptationQueue
from services.generator.worker.queue import WorkerQueue
from services.stack import RedisServer

MODEL, FINGERPRINT, SIZE = "tinyworld", "0" * 64, (32, 32)
END_MARK = "script-keys: end of scenario"
SCRIPT_MODULES = (store, job_index, api_jobs, webhooks)  # every module that holds Lua

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b"}


def _unescape(text: str) -> bytes:
    """An argument as MONITOR quotes it (sdscatrepr: printable ASCII, backslash escapes) back to its bytes."""
    out, last = bytearray(), 0
    for match in _ESCAPE.finditer(text):
        out += text[last : match.start()].encode()
        code = match.group(1)
        out += bytes.fromhex(code[1:]) if code[0] == "x" else _ESCAPES.get(code, code.encode())
        last = match.end()
    return bytes(out + text[last:].encode())


@dataclass
class Call:
    """One EVAL or EVALSHA and the commands its script ran."""

    sha: str
    keys: set[bytes]
    inner: list[list[bytes]] = field(default_factory=list)


class Monitor:
    """MONITOR on a raw connection, read by a thread until the end mark passes."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with self.sock.makefile("r", encoding="ascii", newline="\r\n") as stream:
            for line in stream:
                self.lines.append(line.rstrip("\r\n"))
                if END_MARK in line:
                    return

    def stop(self) -> list[tuple[str, list[bytes]]]:
        """(client, arguments) of every command seen, in the order Redis reported them."""
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "the end mark never reached the monitor"
        commands = []
        for line in self.lines[1:]:  # the first is MONITOR's +OK
            client = line.split("[", 1)[1].split("]", 1)[0].split(" ", 1)[1]
            commands.append((client, [_unescape(arg) for arg in _ARG.findall(line)]))
        return commands


def script_calls(commands: list[tuple[str, list[bytes]]]) -> list[Call]:
    """Group the commands that scripts ran under the EVAL/EVALSHA that ran them.

    Redis 7.0 reports an EVAL/EVALSHA as it starts, then each command its script runs as a ``lua`` line; a script
    runs alone, so its lines follow it with no other client's command in between.
    """
    calls: list[Call] = []
    current: Call | None = None
    for client, args in commands:
        if client == "lua":
            assert current is not None, f"a script's command {args[:2]} came after no EVAL/EVALSHA"
            current.inner.append(args)
            continue
        current = None
        name = args[0].upper()
        if name in (b"EVAL", b"EVALSHA"):
            sha = hashlib.sha1(args[1]).hexdigest() if name == b"EVAL" else args[1].decode()
            current = Call(sha, set(args[3 : 3 + int(args[2])]))
            calls.append(current)
    return calls


def keys_of(admin: redis.Redis, command: list[bytes]) -> list[bytes]:
    """The keys of a command, as Redis' own key specs find them."""
    if len(command) == 1:  # TIME: no arguments, so no keys (and COMMAND GETKEYS refuses a command without any)
        return []
    try:
        keys = admin.command_getkeys(*command)
        return [key.encode() if isinstance(key, str) else key for key in keys]
    except redis.ResponseError as error:
        if "no key arguments" in str(error):  # PUBLISH names a channel, not a key
            return []
        raise


def scripts() -> dict[str, str]:
    """SHA-1 -> name of every Lua script in the generator's modules."""
    return {
        hashlib.sha1(value.encode()).hexdigest(): f"{module.__name__}.{name}"
        for module in SCRIPT_MODULES
        for name, value in vars(module).items()
        if isinstance(value, str) and "redis.call(" in value and not name.endswith("_FUNCTION")
    }


async def scenario(url: str) -> None:
    """Each script at least once, along the paths that touch the most keys."""
    settings = Settings(redis_url=url, chunk_size=2, webhook_secrets="alice:s3cret")
    sync = redis.Redis.from_url(url, decode_responses=True)
    queue = WorkerQueue(sync, settings, "worker-1")
    queue.register_model(MODEL, *SIZE, FINGERPRINT)
    api = redis.asyncio.Redis.from_url(url, decode_responses=True)
    jobs = api_jobs.JobService(api, redis.asyncio.Redis.from_url(url), settings, JobEvents())

    request = JobRequest(prompts=["a red circle", "a blue square", "a green star"], seed=1)
    first = await jobs.submit(request, "alice", idempotency_key="k1")
    assert (await jobs.submit(request, "alice", idempotency_key="k1")).id == first.id
    hooked = await jobs.submit(JobRequest(prompts=["a star"], callback_url="http://127.0.0.1:9/hook"), "alice", "k2")
    failing = await jobs.submit(JobRequest(prompts=["a moon"], cache_scope="tenant"), "bob")
    assert (await jobs.metrics_snapshot(60))["queued_images"] == 5

    chunks = queue.read_new(MODEL, 10)
    assert {chunk.job_id for chunk in chunks} == {first.id, hooked.id, failing.id}
    info = queue.job_info(first.id)
    assert info is not None
    keys = [request_image_key(info.request, i, FINGERPRINT, SIZE) for i in range(3)]
    assert queue.cached(keys, None) == [None] * 3
    shas = [hashlib.sha256(prompt.encode()).hexdigest() for prompt in info.request.prompts]
    queue.store_pngs(sync, [(None, key, sha, b"png") for key, sha in zip(keys, shas, strict=True)])
    assert queue.cached(keys, None) == shas
    assert queue.record(info, [(0, shas[0], False)]).outcome == store.RecordOutcome.running
    assert queue.record(info, [(1, shas[1], False), (2, shas[2], True)]).outcome == store.RecordOutcome.finished

    again = await jobs.submit(request, "alice", idempotency_key="k3")  # every image cached: succeeded at once
    assert (again.status, again.cached) == (JobState.succeeded, 3)
    queue.fail_job(failing.id, "the scenario fails it")
    cancelled = await jobs.cancel(hooked.id, "alice")
    assert cancelled is not None and cancelled.status == JobState.cancelled

    page = await JobListing(api).page("alice", None, 1, None)
    assert (await JobListing(api).page("alice", None, 1, page.next_cursor)).jobs

    sender = asyncio.create_task(webhooks.WebhookSender(jobs).run())
    await asyncio.sleep(0.5)
    sender.cancel()
    adapt(url)
    await api.echo(END_MARK)


def adapt(url: str) -> None:
    """An adaptation job as the API queues it, taken, stepped and ended by a worker."""
    data = redis.Redis.from_url(url)
    job = Adaptation("ad-" + "0" * 32, "alice", MODEL, 4, 2, 1e-3, 0, False, None)
    data.set(redis_keys.adaptation_archive(job.id, job.tenant), b"tar bytes")
    data.hset(redis_keys.adaptation(job.id, job.tenant), mapping=job.record())  # type: ignore[arg-type]
    data.xadd(redis_keys.adaptations(job.model), {"id": job.id, "tenant": job.tenant})
    queue = AdaptationQueue(redis.Redis.from_url(url, decode_responses=True), data, "worker-1", 30.0, 3, ttl=60)
    queue.ensure_group(MODEL)
    held = queue.take(MODEL)
    assert held is not None and queue.progress(held, 1)
    queue.succeed(held, "a" * 64)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis_server = RedisServer(tmp_path / "redis").start()
    yield redis_server
    redis_server.stop()


def test_every_script_touches_only_the_keys_it_declares(server: RedisServer) -> None:
    monitor = Monitor(server.port)
    asyncio.run(scenario(server.url))
    calls, names = script_calls(monitor.stop()), scripts()
    not_run = set(names) - {call.sha for call in calls}
    assert not not_run, f"the scenario never ran {sorted(names[sha] for sha in not_run)}"
    admin = redis.Redis(port=server.port)
    undeclared = {
        (names.get(call.sha, call.sha), command[0].decode().upper(), key.decode(errors="replace"))
        for call in calls
        for command in call.inner
        for key in keys_of(admin, command)
        if key not in call.keys
    }
    assert not undeclared, f"keys a script touched without declaring them: {sorted(undeclared)}"


# --- the checks that keep a script right when what its caller read has changed since -------------------------


@pytest.fixture
def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True)


def _job_with_work(admin: redis.Redis, job_id: str, tenant: str) -> None:
    admin.hset(redis_keys.job(job_id), mapping={"tenant": tenant, "priority": 0, "total": 1})
    admin.xgroup_create(redis_keys.job_work(job_id), redis_keys.GROUP, id="0", mkstream=True)
    admin.xadd(redis_keys.job_work(job_id), {"indices": "0"})
    admin.zadd(redis_keys.active(MODEL), {job_id: time.time()})


def test_read_round_strict_reads_nothing_when_a_job_became_active_since(admin: redis.Redis) -> None:
    _job_with_work(admin, "seen", "alice")
    _job_with_work(admin, "new", "bob")
    read = admin.register_script(store.READ_ROUND)
    assert read(*store.read_round_args(MODEL, ["seen"], "w", 10, 0, strict=True)) is None
    assert admin.xpending(redis_keys.job_work("seen"), redis_keys.GROUP)["pending"] == 0
    _, chunks = read(*store.read_round_args(MODEL, ["seen"], "w", 10, 0, strict=False))
    assert [job for job, _, _ in chunks] == ["seen"]


def test_admit_job_answers_stale_when_the_idempotency_record_changed_since(admin: redis.Redis) -> None:
    record = redis_keys.idempotency("alice", "k")
    admin.hset(record, mapping={"job": "other", "fingerprint": "f"})
    admin.hset(redis_keys.job("other"), "status", "queued")
    job = redis_keys.job("new")
    keys = [job, *(f"{job}:{part}" for part in ("images", "work", "active", "tenant", "stats")), record]
    keys += [f"{job}:order", redis_keys.WEBHOOKS, job]  # the caller read no job in the record
    args = ["new", 10, 60, 0, '{"status": "queued"}', "{}", '["0"]', "{}", redis_keys.GROUP, "f", ""]
    assert admin.eval(store.ADMIT_JOB, len(keys), *keys, *args) == [0, store.AdmitOutcome.stale]
    assert admin.keys(f"{job}*") == []


def test_cache_lookup_counts_an_entry_rewritten_since_the_read_as_a_miss(admin: redis.Redis) -> None:
    entries = store.lookup_batches(["kept", "rewritten"])[0]
    for entry, sha in zip(entries, ["a", "b"], strict=True):
        admin.set(entry, sha, ex=5)
        admin.set(redis_keys.png(sha), b"png", ex=5)
    shas = admin.mget(entries)
    admin.set(entries[1], "c", ex=5)
    keys, args = store.lookup_args(entries, shas, 600)
    found = admin.eval(store.CACHE_LOOKUP, len(keys), *keys, *args)
    assert store.lookup_hits(shas, found) == ["a", None]
    assert admin.ttl(redis_keys.png("a")) > 5 and admin.ttl(redis_keys.png("b")) <= 5


def test_end_job_refuses_an_idempotency_record_that_is_not_the_jobs(admin: redis.Redis) -> None:
    admin.hset(redis_keys.job("j"), mapping={"status": "queued", "idempotency_key": redis_keys.idempotency("t", "k")})
    keys = store.job_keys("j", MODEL, "t", None)
    with pytest.raises(redis.ResponseError, match="is not the idempotency record"):
        admin.eval(store.END_JOB, len(keys), *keys, "j", "cancelled", "", "now", 60, redis_keys.JOB_ENDED)
    assert admin.hget(redis_keys.job("j"), "status") == "queued"
