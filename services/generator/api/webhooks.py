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

import httpx
from redis import exceptions as redis_errors

from gift_common import redis_keys
from services.generator import replies
from services.generator.api.jobs import JobService

log = logging.getLogger("gift.api")
SIGNATURE_HEADER = "X-Gift-Signature"
TIMESTAMP_HEADER = "X-Gift-Timestamp"
IN_FLIGHT = 16  # most POSTs one process has open at once
READ_BLOCK_MS = 1000  # how long one read waits for new entries (also how often due retries are moved)

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


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: an HMAC-SHA256 of ``<timestamp>.<body>``, so a replay cannot change the time."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


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
        try:
            outcome = await self._post(http, job_id)
            if outcome is None or attempt >= self.settings.webhook_attempts:
                if outcome is not None:
                    log.error("webhook of job %s given up after %d attempts: %s", job_id, attempt, outcome)
                await self._finish(entry_id)
            else:
                delay = self.settings.webhook_backoff_seconds * 2 ** (attempt - 1)
                log.warning("webhook of job %s, attempt %d: %s; next in %.1f s", job_id, attempt, outcome, delay)
                await self._finish(entry_id, retry=(f"{job_id}:{attempt + 1}", time.time() + delay))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.OutOfMemoryError, OSError):
            pass  # left pending: taken over again after claim_idle
        finally:
            self._slots.release()

    async def _post(self, http: httpx.AsyncClient, job_id: str) -> str | None:
        """POST the job's final status; None when done with it (delivered, or nothing left to send), else why not."""
        tenant = replies.optional_text(await self.redis.hget(redis_keys.job(job_id), "tenant"))
        status = await self.jobs.status(job_id, tenant) if tenant else None
        request = await self.jobs.request_of(job_id) if status else None
        secret = self.settings.webhook_secret_of(tenant) if tenant else None
        if status is None or request is None or request.callback_url is None or secret is None:
            log.warning("webhook of job %s dropped: the job expired or its tenant has no secret any more", job_id)
            return None
        body = status.model_dump_json().encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            TIMESTAMP_HEADER: str(timestamp),
        }
        try:
            response = await http.post(request.callback_url, content=body, headers=headers)
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"
        if response.is_success:
            log.info("webhook of job %s delivered to %s", job_id, request.callback_url)
            return None
        return f"answered {response.status_code}"

    async def _finish(self, entry_id: str, retry: tuple[str, float] | None = None) -> None:
        """Acknowledge the entry and, for a retry, schedule the next attempt, in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if retry:
                pipe.zadd(redis_keys.WEBHOOK_RETRIES, {retry[0]: retry[1]})
            pipe.xack(redis_keys.WEBHOOKS, redis_keys.WEBHOOK_GROUP, entry_id)
            pipe.xdel(redis_keys.WEBHOOKS, entry_id)
            await pipe.execute()
