"""Wake long-polls when a job ends, from one Redis pub/sub subscription per API process.

Pub/sub is not durable, so a waiter also re-checks the job every ``RECHECK_SECONDS``: a lost message (Redis
restarted, say) delays an answer by at most that, and waiting costs nothing while no job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from gift_common import redis_keys

log = logging.getLogger("gift.api")
RECHECK_SECONDS = 1.0


class JobEvents:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when ``job_id`` ends; register it before checking the job, so no end is missed."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id, set())
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(job_id, None)

    def _wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for job_id in list(self._waiters):
            self._wake(job_id)

    async def listen(self, redis: Redis) -> None:
        """Run for the life of the process; survive Redis outages."""
        while True:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(redis_keys.JOB_ENDED)
                    self._wake_all()  # anything that ended while we were not subscribed
                    async for message in pubsub.listen():
                        self._wake(message["data"])
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
                await asyncio.sleep(1.0)


async def wait_for_event(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=min(seconds, RECHECK_SECONDS))
