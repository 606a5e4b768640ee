"""Adaptation jobs on the API's side: check an archive and queue its job, read it, cancel it (adaptations.py)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from gift_common import redis_keys
from gift_common.adaptation_archive import check_archive
from gift_common.schemas import AdaptationStatus, JobState
from gift_common.settings import ApiSettings
from services.generator import replies
from services.generator.adaptations import Adaptation, end_args, end_keys, status_of
from services.generator.api.adapters import AdapterService
from services.generator.api.errors import JobError
from services.generator.store import END_ADAPTATION

log = logging.getLogger("gift.api")


class AdaptationService:
    """``redis`` decodes replies to text; ``blobs`` is the same server without decoding, for the archive's bytes."""

    def __init__(
        self,
        redis: Redis,
        blobs: Redis,
        settings: ApiSettings,
        adapters: AdapterService,
        check_room: Callable[[], Awaitable[None]],
    ):
        self.redis, self.blobs, self.settings, self.adapters = redis, blobs, settings, adapters
        self.check_room = check_room  # the image jobs' admission mark: an archive is new work in Redis too

    async def submit(self, archive: bytes, job: Adaptation) -> AdaptationStatus:
        """Queue ``job`` once its archive and parameters pass every check; a fault is a 422 naming it, a Redis past
        the admission mark a 503."""
        await self.check_room()
        await self.adapters.layers(job.model)  # an unknown model, or one no worker described, is refused here
        if job.steps > self.settings.max_adaptation_steps:
            raise JobError(422, f"steps: {job.steps} is more than GIFT_MAX_ADAPTATION_STEPS "
                                f"({self.settings.max_adaptation_steps})")  # fmt: skip
        if job.rank > self.settings.max_adapter_rank:
            raise JobError(422, f"rank: {job.rank} is more than GIFT_MAX_ADAPTER_RANK "
                                f"({self.settings.max_adapter_rank})")  # fmt: skip
        try:
            images = await asyncio.to_thread(check_archive, archive, self.settings.archive_limits())
        except ValueError as error:
            raise JobError(422, f"archive: {error}") from None
        record = job.record()
        async with self.blobs.pipeline(transaction=True) as pipe:
            pipe.set(redis_keys.adaptation_archive(job.id, job.tenant), archive)
            pipe.hset(redis_keys.adaptation(job.id, job.tenant), mapping=record)  # type: ignore[arg-type]
            pipe.xadd(redis_keys.adaptations(job.model), {"id": job.id, "tenant": job.tenant})
            await pipe.execute()
        await ensure_group(self.redis, job.model)
        log.info("adaptation %s queued: %d images, %d steps of rank %d on %s",
                 job.id, images, job.steps, job.rank, job.model)  # fmt: skip
        return status_of(record)

    async def status(self, adaptation_id: str, tenant: str) -> AdaptationStatus | None:
        fields = replies.text_hash(await self.redis.hgetall(redis_keys.adaptation(adaptation_id, tenant)))
        return status_of(fields) if fields else None

    async def cancel(self, adaptation_id: str, tenant: str) -> AdaptationStatus | None:
        """Cancel a live job; its worker stops at its next step. 409 once it has ended otherwise."""
        keys = end_keys(adaptation_id, tenant)
        args = end_args(adaptation_id, JobState.cancelled, self.settings.job_ttl_seconds)
        state = await self.redis.eval(END_ADAPTATION, len(keys), *keys, *args)
        if state is None:
            return None
        if state in (JobState.succeeded.value, JobState.failed.value):
            raise JobError(409, f"adaptation {adaptation_id} already {state}; only unfinished ones can be cancelled")
        return await self.status(adaptation_id, tenant)


def new_id() -> str:
    return f"ad-{uuid.uuid4().hex}"


async def ensure_group(redis: Redis, model: str) -> None:
    """The workers' consumer group on the model's adaptations stream, from its first entry (made once, by whoever
    is first: the API or a worker)."""
    try:
        await redis.xgroup_create(redis_keys.adaptations(model), redis_keys.GROUP, id="0", mkstream=True)
    except redis_errors.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
