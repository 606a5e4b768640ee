"""Admission control at a high-water mark of Redis's memory, so that accepted work can still finish.

Under ``noeviction`` Redis refuses every write that needs memory once ``used_memory`` reaches ``maxmemory``: then
workers could neither record the images of jobs already accepted nor send heartbeats. So the API stops admitting
new jobs earlier, at GIFT_REDIS_ADMIT_FRACTION of ``maxmemory``, and leaves the rest to the work in hand. It reads
``INFO memory`` (allowed where a managed Redis forbids CONFIG GET) at most once per READ_EVERY_SECONDS per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis

log = logging.getLogger("gift.api")

READ_EVERY_SECONDS = 1.0  # how stale the process's reading of Redis's memory may be


@dataclass(frozen=True)
class Memory:
    used: int
    limit: int  # Redis's maxmemory; 0 means none


class AdmissionMark:
    """Says whether Redis has room for new work: ``used_memory`` below ``fraction`` of ``maxmemory``.

    A fraction of 1 or more, or a Redis without ``maxmemory``, admits until Redis itself refuses.
    """

    def __init__(self, redis: Redis, fraction: float):
        self.redis, self.fraction = redis, fraction
        self._memory = Memory(used=0, limit=0)
        self._read_at = -READ_EVERY_SECONDS
        self._reading = asyncio.Lock()  # concurrent submissions share one read instead of each sending INFO

    @property
    def percent(self) -> str:
        return f"{self.fraction * 100:g}%"

    async def full(self) -> bool:
        """True when new work must wait: Redis holds at least the mark's share of its maxmemory."""
        return self.fraction < 1 and self._over(await self._reading_now())

    async def _reading_now(self) -> Memory:
        async with self._reading:
            if time.monotonic() - self._read_at >= READ_EVERY_SECONDS:
                was_full = self._over(self._memory)
                info = await self.redis.info("memory")
                self._memory = Memory(used=int(info["used_memory"]), limit=int(info["maxmemory"]))
                self._read_at = time.monotonic()
                if self._over(self._memory) != was_full:
                    self._log_change()
        return self._memory

    def _over(self, memory: Memory) -> bool:
        """Used memory at or past the mark; never without a maxmemory."""
        return memory.limit > 0 and memory.used >= self.fraction * memory.limit

    def _log_change(self) -> None:
        memory = self._memory
        state = "stops" if self._over(memory) else "resumes"
        log.warning(
            "redis holds %d of %d bytes of maxmemory: admission %s at the mark of %s",
            memory.used, memory.limit, state, self.percent,
        )  # fmt: skip
