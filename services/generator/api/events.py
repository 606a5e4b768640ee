"""Wake long-polls when a job ends, and event streams when it records images, from one Redis pub/sub
subscription per API process.

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


CHANNELS = (redis_keys.JOB_ENDED, redis_keys.JOB_PROGRESS)


class JobEvents:
    def __init__(self) -> None:
        self._waiters: dict[str, dict[str, set[asyncio.Event]]] = {channel: {} for channel in CHANNELS}

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str, *, progress: bool = False) -> AsyncIterator[asyncio.Event]:
        """An event set when ``job_id`` ends (or, with ``progress``, records images too); register it before
        checking the job, so no change is missed."""
        event = asyncio.Event()
        channels = CHANNELS if progress else (redis_keys.JOB_ENDED,)
        for channel in channels:
            self._waiters[channel].setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            for channel in channels:
                waiters = self._waiters[channel].get(job_id, set())
                waiters.discard(event)
                if not waiters:
                    self._waiters[channel].pop(job_id, None)

    def _wake(self, channel: str, job_id: str) -> None:
        for event in self._waiters[channel].get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for channel, waiters in self._waiters.items():
            for job_id in list(waiters):
                self._wake(channel, job_id)

    async def listen(self, redis: Redis) -> None:
        """Run for the life of the process; survive Redis outages."""
        while True:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(*CHANNELS)
                    self._wake_all()  # anything that changed while we were not subscribed
                    async for message in pubsub.listen():
                        self._wake(message["channel"], message["data"])
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
                await asyncio.sleep(1.0)


async def wait_for_event(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=min(seconds, RECHECK_SECONDS))
