"""Webhooks: POST a job's final status to its ``callback_url``, signed, retried with backoff, off the queue's path.

A job that ends queues its delivery in the webhooks stream in the same atomic step (store.py), so no end goes
unannounced. Every API process reads that stream through one consumer group, so several processes share the
deliveries; an entry is acknowledged only once its POST succeeded or was given up, so the entries of a process that
died are taken over by another (XAUTOCLAIM) after ``claim_idle``. A failed attempt goes to a sorted set by due time
and back into the stream when due: a slow or failing receiver holds up neither the others nor any job.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis import exceptions as redis_errors
from redis.typing import EncodableT, FieldT

from gift_common import redis_keys
from gift_common.settings import without_credentials
from services.generator import logs, replies, stats, store, tracing
from services.generator.api.jobs import JobService

log = logging.getLogger("gift.api")
SIGNATURE_HEADER = "X-Gift-Signature"
TIMESTAMP_HEADER = "X-Gift-Timestamp"
IN_FLIGHT = 16  # most POSTs one process has open at once
READ_BLOCK_MS = 1000  # how long one read waits for new entries (also how often due retries are moved)
GIVEN_UP_KEPT = 10_000  # about how many of the latest give-ups the given-up stream keeps for operators

# Move retries that are due back into the stream. KEYS: retries zset, webhooks stream. ARGV: now.
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  local job, attempt = string.match(member, '^(.*):(%d+)$')
  redis.call('XADD', KEYS[2], '*', 'job', job, 'attempt', attempt)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


@dataclass(frozen=True)
class Webhook:
    """One job's webhook: whose, where it goes, the body and the secret that signs it."""

    job: str
    tenant: str
    url: str
    body: bytes
    secret: str = field(repr=False)  # never in a log line

    def given_up(self, attempts: int, error: str) -> dict[FieldT, EncodableT]:
        """The record of its give-up: what an operator needs to tell the tenant which receiver failed, and how."""
        return {
            "job": self.job,
            "tenant": self.tenant,
            "callback_url": self.url,
            "attempts": attempts,
            "error": error,
        }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: an HMAC-SHA256 of ``<timestamp>.<body>``, so a replay cannot change the time."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


async def post(http: httpx.AsyncClient, webhook: Webhook) -> str | None:
    """POST the job's final status, signed now; None when delivered, else why not.

    Any failure is a failed attempt, not only the client's HTTP errors: a URL it refuses (``InvalidURL``) would
    otherwise end the delivery's task and leave its entry to be taken over and fail again every ``claim_idle``.
    """
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(webhook.secret, timestamp, webhook.body),
        TIMESTAMP_HEADER: str(timestamp),
    }
    try:
        response = await http.post(webhook.url, content=webhook.body, headers=headers)
    except Exception as error:  # whatever it is, it is this attempt's error
        return f"{type(error).__name__}: {error}"
    if response.is_success:
        log.info("webhook of job %s delivered to %s", webhook.job, without_credentials(webhook.url))
        return None
    return f"answered {response.status_code}"


class WebhookSender:
    """The background task of one API process that sends the webhooks of every job."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs, self.redis, self.settings = jobs, jobs.redis, jobs.settings
        self.consumer = uuid.uuid4().hex
        self.claim_idle_ms = int(1000 * max(60.0, 3 * self.settings.webhook_timeout_seconds))
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._move_due = self.redis.register_script(_MOVE_DUE)

    async def run(self) -> None:
        """Run for the life of the process; survive Redis outages."""
        async with httpx.AsyncClient(timeout=self.settings.webhook_timeout_seconds) as http:
            while True:
                try:
                    await self._create_group()
                    while True:
                        await self._move_due(keys=[redis_keys.WEBHOOK_RETRIES, redis_keys.WEBHOOKS], args=[time.time()])
                        for entry_id, fields in await self._take():
                            await self._slots.acquire()
                            task = asyncio.create_task(
                                self._deliver(http, entry_id, fields["job"], int(fields["attempt"]))
                            )
                            self._tasks.add(task)
                            task.add_done_callback(self._tasks.discard)
                except (
                    redis_errors.ConnectionError,
                    redis_errors.TimeoutError,
                    redis_errors.OutOfMemoryError,
                    OSError,
                ):
                    await asyncio.sleep(1.0)

    async def _create_group(self) -> None:
        try:
            await self.redis.xgroup_create(redis_keys.WEBHOOKS, redis_keys.WEBHOOK_GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _take(self) -> list[replies.Entry]:
        """Entries another process left unfinished for long, else new ones (waiting up to READ_BLOCK_MS)."""
        _, claimed, _ = await self.redis.xautoclaim(
            redis_keys.WEBHOOKS, redis_keys.WEBHOOK_GROUP, self.consumer, self.claim_idle_ms, count=IN_FLIGHT
        )
        if claimed:
            return replies.entries(claimed)
        read = await self.redis.xreadgroup(
            redis_keys.WEBHOOK_GROUP, self.consumer, {redis_keys.WEBHOOKS: ">"}, count=IN_FLIGHT, block=READ_BLOCK_MS
        )
        return replies.group_read(read)

    async def _deliver(self, http: httpx.AsyncClient, entry_id: str, job_id: str, attempt: int) -> None:
        """One attempt, in a task of its own: the ids it adds to the log lines stay with it."""
        try:
            read = await self.redis.hmget(redis_keys.job(job_id), ["tenant", *store.ORIGIN_FIELDS])
            tenant, request_id, traceparent = map(replies.optional_text, read)
            logs.add(job_id=job_id, tenant=tenant, request_id=request_id)
            attributes: tracing.Attributes = {"gift.job_id": job_id, "gift.webhook.attempt": attempt}
            parent = tracing.parent_of(traceparent)
            with tracing.span(tracing.WEBHOOK, parent=parent, kind=SpanKind.CLIENT, attributes=attributes) as span:
                webhook = await self._webhook_of(job_id, tenant)
                error = await post(http, webhook) if webhook else None
                if span is not None and error is not None:
                    span.set_status(Status(StatusCode.ERROR, "not delivered"))
                if webhook is None or error is None:
                    await self._finish(entry_id)
                elif attempt >= self.settings.webhook_attempts:
                    log.error("webhook of job %s given up after %d attempts: %s", job_id, attempt, error)
                    await self._finish(entry_id, given_up=webhook.given_up(attempt, error))
                else:
                    delay = self.settings.webhook_backoff_seconds * 2 ** (attempt - 1)
                    log.warning("webhook of job %s, attempt %d: %s; next in %.1f s", job_id, attempt, error, delay)
                    await self._finish(entry_id, retry=(f"{job_id}:{attempt + 1}", time.time() + delay))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.OutOfMemoryError, OSError):
            pass  # left pending: taken over again after claim_idle
        finally:
            self._slots.release()

    async def _webhook_of(self, job_id: str, tenant: str | None) -> Webhook | None:
        """What to POST for the job of ``tenant`` (None: it expired); None when there is nothing left to send (it
        expired, or its tenant lost its secret)."""
        status = await self.jobs.status(job_id, tenant) if tenant else None
        request = await self.jobs.request_of(job_id) if status else None
        secret = self.settings.webhook_secret_of(tenant) if tenant else None
        if status is None or request is None or request.callback_url is None or secret is None:
            log.warning("webhook of job %s dropped: the job expired or its tenant has no secret any more", job_id)
            return None
        assert tenant is not None
        return Webhook(job_id, tenant, request.callback_url, status.model_dump_json().encode(), secret)

    async def _finish(
        self, entry_id: str, retry: tuple[str, float] | None = None, given_up: dict[FieldT, EncodableT] | None = None
    ) -> None:
        """Acknowledge the entry and, in the same transaction, schedule its next attempt or record its give-up."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if retry:
                pipe.zadd(redis_keys.WEBHOOK_RETRIES, {retry[0]: retry[1]})
            if given_up:
                pipe.xadd(redis_keys.WEBHOOKS_GIVEN_UP, given_up, maxlen=GIVEN_UP_KEPT, approximate=True)
                pipe.hincrby(*stats.counter_increment("webhooks_given_up"))
            pipe.xack(redis_keys.WEBHOOKS, redis_keys.WEBHOOK_GROUP, entry_id)
            pipe.xdel(redis_keys.WEBHOOKS, entry_id)
            await pipe.execute()
