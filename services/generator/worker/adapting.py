"""A worker's adaptation jobs: take one, train it on the worker's own pipeline, keep its result as an adapter.

The worker runs one when it has no image batch to make (GIFT_ADAPTATIONS=idle), never (never), or instead of image
jobs (only); docs/ARCHITECTURE.md says why. The result goes through the API's own upload code (AdapterService), so
a trained adapter is checked, named and stored exactly as an uploaded one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from PIL import Image, ImageOps
from redis.asyncio import Redis as AsyncRedis

from gift_common.adaptation_archive import iter_archive
from gift_common.schemas import AdapterInfo
from gift_common.settings import WorkerSettings
from services.generator import logs
from services.generator.api.adapters import AdapterService
from services.generator.api.errors import JobError
from services.generator.blobs import BlobStore
from services.generator.worker import training
from services.generator.worker.adaptation_queue import AdaptationQueue, Held
from services.generator.worker.adapters import AdapterCache
from services.generator.worker.queue import REDIS_UNAVAILABLE
from services.generator.worker.synthesis import LoadedModel

log = logging.getLogger("gift.worker")
LOOK_EVERY_SECONDS = 1.0  # how often an idle worker looks for adaptation jobs (two reads per model)


class Adapting:
    def __init__(
        self,
        queue: AdaptationQueue,
        settings: WorkerSettings,
        adapters: AdapterCache,
        blob_store: BlobStore | None,
        stopping: threading.Event,
    ):
        self.queue, self.settings, self.adapters, self.blob_store = queue, settings, adapters, blob_store
        self.stopping = stopping
        self.held: Held | None = None  # the job in training: the heartbeat keeps its entry claimed
        self._next_look = 0.0

    def heartbeat(self) -> None:
        if (held := self.held) is not None:
            self.queue.keep(held)

    def run_one(self, models: dict[str, LoadedModel]) -> bool:
        """Train one waiting job of any of ``models`` to its end, a cancel or a stop; False when none waits (looked
        for at most every LOOK_EVERY_SECONDS: an idle worker polls often, and a training waits a second unharmed)."""
        if time.monotonic() < self._next_look:
            return False
        self._next_look = time.monotonic() + LOOK_EVERY_SECONDS
        for name, model in models.items():
            if (held := self.queue.take(name)) is None:
                continue
            self.held = held
            try:
                with logs.bound(adaptation_id=held.job.id, tenant=held.job.tenant):
                    self._run(model, held)
            finally:
                self.held = None
                self._next_look = 0.0  # another may wait: look again at once
            return True
        return False

    def _run(self, model: LoadedModel, held: Held) -> None:
        archive = self.queue.archive(held)
        if archive is None:
            self.queue.fail(held, "its archive is no longer stored")
            return
        try:
            size = (model.width, model.height)  # each image cut to the model's size as it is read: kept small
            pairs = [(ImageOps.fit(image, size, Image.Resampling.BICUBIC), caption)
                     for image, caption in iter_archive(archive, self.settings.archive_limits())]  # fmt: skip
        except ValueError as error:
            self.queue.fail(held, f"archive: {error}")
            return
        resume = self.queue.checkpoint(held)
        if resume is None and not self.queue.progress(held, 0):  # running from now on; unless cancelled meanwhile
            self.queue.drop(held)
            return
        log.info("adaptation %s: training %d steps of rank %d on %d images%s", held.job.id, held.job.steps,
                 held.job.rank, len(pairs), " from its checkpoint" if resume else "")  # fmt: skip
        started = time.perf_counter()
        self.adapters.base(model)
        try:
            every = self.settings.adaptation_checkpoint_steps
            result = training.train(model, pairs, held.job, resume=resume, every=every,
                                    report=lambda step: self._report(held, step),
                                    save=lambda step, data: self._save(held, step, data))  # fmt: skip
        except REDIS_UNAVAILABLE:
            raise  # not the job's fault: its entry, no longer kept claimed, is taken over from its checkpoint
        except Exception as error:  # a training error fails its job, never the worker
            log.exception("adaptation %s: training failed", held.job.id)
            self.queue.fail(held, f"training failed: {error}")
            return
        finally:
            self.adapters.base(model)
        if result is None:
            self._stopped(held)
            return
        seconds = time.perf_counter() - started
        self._keep(held, result, seconds)

    def _report(self, held: Held, step: int) -> bool:
        return self.queue.progress(held, step) and not self.stopping.is_set()

    def _save(self, held: Held, step: int, data: bytes) -> None:
        self.queue.save_checkpoint(held, data)
        log.info("adaptation %s: checkpoint at step %d (%d bytes)", held.job.id, step, len(data))

    def _stopped(self, held: Held) -> None:
        """A stop hands the job over (it resumes from its checkpoint); a cancel drops its entry."""
        if self.stopping.is_set():
            self.queue.release(held)
            log.info("adaptation %s: stopping; handed over at its last checkpoint", held.job.id)
        else:
            self.queue.drop(held)
            log.info("adaptation %s: cancelled; training stopped", held.job.id)

    def _keep(self, held: Held, data: bytes, seconds: float) -> None:
        try:
            info = asyncio.run(self._upload(held, data))
        except JobError as refused:
            self.queue.fail(held, f"the trained adapter was refused: {refused.detail}")
            return
        self.queue.succeed(held, info.id)
        log.info("adaptation %s succeeded: adapter %s (%d bytes) after %d steps in %.1f s",
                 held.job.id, info.id, len(data), held.job.steps, seconds)  # fmt: skip

    async def _upload(self, held: Held, data: bytes) -> AdapterInfo:
        """Stored by the code that stores an upload: the same checks, the same id, the same records."""
        job = held.job
        redis = AsyncRedis.from_url(self.settings.redis_url, decode_responses=True)
        blobs = AsyncRedis.from_url(self.settings.redis_url)
        try:
            service = AdapterService(redis, blobs, self.settings, self.blob_store)
            info, _ = await service.upload(data, job.model, job.tenant, shared=job.shared, name=job.name)
            return info
        finally:
            await redis.aclose()
            await blobs.aclose()
