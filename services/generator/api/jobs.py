"""What the API does with jobs, on Redis alone: accept, report, cancel, and read back stored bytes.

The API never loads a model. It still answers a job whose images are all in the cache at once: the cache is
keyed by content (see gift_common.content_key), and the model's fingerprint and native size come from the
workers' registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from redis.exceptions import WatchError

from gift_common import redis_keys
from gift_common.content_key import request_image_key
from gift_common.schemas import JobRequest, JobState, JobStatus, ModelInfo
from gift_common.settings import ApiSettings
from services.generator import job_index, logs, replies, stats, store, tracing
from services.generator.api.adaptations import AdaptationService
from services.generator.api.adapters import AdapterService
from services.generator.api.admission import AdmissionMark
from services.generator.api.errors import JobError
from services.generator.api.events import JobEvents, wait_for_event
from services.generator.blobs import BlobName, BlobStore

log = logging.getLogger("gift.api")

KEY_BATCH = 512  # Redis round trips are batched by this many keys
MODELS_TTL_SECONDS = 2.0  # how stale the API's copy of the workers' model registrations may be
ADMIT_TRIES = 3  # how often a submission reads its idempotency record again when it changed meanwhile
REDIS_FULL = "the job queue (Redis) is full and accepts no new work; retry later"  # a new job's 503 at maxmemory


@dataclass(frozen=True)
class RegisteredModel:
    info: ModelInfo
    fingerprint: str  # the images of jobs that name no scheduler
    schedulers: dict[str, str]  # the fingerprint under each scheduler a job may name

    def fingerprint_for(self, request: JobRequest) -> str | None:
        """The fingerprint the request's images are keyed under; None when the worker registered none for its
        scheduler (a worker older than the field), so nothing is taken from the cache."""
        return self.fingerprint if request.scheduler is None else self.schedulers.get(request.scheduler.value)


class JobService:
    """``redis`` decodes replies to text; ``blobs`` is the same server without decoding, for PNG bytes."""

    def __init__(
        self, redis: Redis, blobs: Redis, settings: ApiSettings, events: JobEvents, blob_store: BlobStore | None = None
    ):
        self.redis, self.blobs, self.settings, self.events = redis, blobs, settings, events
        self.blob_store = blob_store
        self.adapters = AdapterService(redis, blobs, settings, blob_store)
        self._models: dict[str, RegisteredModel] = {}
        self._served: set[str] = set()  # the models a live worker serves, read with the registrations
        self._models_read_at = -MODELS_TTL_SECONDS
        self.admission = AdmissionMark(redis, settings.redis_admit_fraction)
        self.adaptations = AdaptationService(redis, blobs, settings, self.adapters, self._check_room)
        self._lookup = redis.register_script(store.CACHE_LOOKUP)
        self._admit = redis.register_script(store.ADMIT_JOB)
        self._read = redis.register_script(store.READ_JOB)
        self._queued = redis.register_script(store.QUEUED_IMAGES)

    # --- models -----------------------------------------------------------------------------------

    async def registered_models(self, *, fresh: bool = False) -> dict[str, RegisteredModel]:
        """The workers' registrations, re-read at most every MODELS_TTL_SECONDS unless ``fresh``."""
        if fresh or time.monotonic() - self._models_read_at > MODELS_TTL_SECONDS:
            self._models = await self._read_models()
            seen = replies.text_hash(await self.redis.hgetall(redis_keys.MODELS_SEEN))
            since = time.time() - self.settings.worker_seen_seconds
            self._served = {name for name, at in seen.items() if float(at) >= since}
            self._models_read_at = time.monotonic()
        return self._models

    async def _read_models(self) -> dict[str, RegisteredModel]:
        raw = replies.text_hash(await self.redis.hgetall(redis_keys.MODELS))
        models = {}
        for name, value in raw.items():
            entry = json.loads(value)
            info = ModelInfo(
                name=name,
                height=entry["height"],
                width=entry["width"],
                default=name == self.settings.default_model,
                max_image_cost=self.settings.max_image_cost,
                stand_in=entry.get("stand_in", False),
            )
            models[name] = RegisteredModel(info, entry["fingerprint"], entry.get("schedulers", {}))
        return models

    async def models(self) -> list[ModelInfo]:
        return [m.info for _, m in sorted((await self.registered_models(fresh=True)).items())]

    # --- submit -----------------------------------------------------------------------------------

    async def submit(self, request: JobRequest, tenant: str, idempotency_key: str | None = None) -> JobStatus:
        """Accept a job; with an ``idempotency_key`` the tenant already used for a job that still exists, return that
        job instead (a client's retry after a lost answer), or refuse a different request under the same key."""
        self._check_limits(request, tenant)
        await self._check_room()
        fingerprint = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
        model = request.model or self.settings.default_model
        request = request.model_copy(
            update={"model": model, "cache_scope": request.cache_scope or self.settings.cache_scope}
        )
        models = await self._check_served(model)
        self._check_cost(request, models.get(model))
        await self.adapters.check_job(request, tenant)

        job_id = uuid.uuid4().hex
        created_at = store.now_iso()
        hits = await self._cache_hits(request, models.get(model), request.cache_owner(tenant))
        misses = [i for i in range(len(request.prompts)) if i not in hits]
        key = (idempotency_key, fingerprint) if idempotency_key else None
        attributes: tracing.Attributes = {
            "gift.job_id": job_id,
            "gift.tenant": tenant,
            "gift.model": model,
            "gift.images": len(request.prompts),
        }
        with tracing.span(tracing.ENQUEUE, kind=SpanKind.PRODUCER, attributes=attributes):
            # the job keeps the request's id and this span, which the lines and spans of its workers carry on
            origin = {"request_id": logs.current("request_id"), "traceparent": tracing.traceparent()}
            fields = store.new_job_fields(job_id, tenant, request, created_at, origin)
            fields, records, first = await self._create(job_id, tenant, request, fields, hits, misses, key)
            if first is not None:  # nothing was enqueued: the span names the job that answers
                tracing.annotate(job_id=first)
        if first is not None:
            return await self._replay(first, tenant)
        logs.add(job_id=job_id)
        tracing.annotate(job_id=job_id)
        log.info(
            "job %s accepted: tenant=%s model=%s images=%d cached=%d queued=%d",
            job_id, tenant, request.model, len(request.prompts), len(hits), len(misses),
        )  # fmt: skip
        return store.status_from({**fields, "done": str(len(hits))}, records)

    async def _check_served(self, name: str) -> dict[str, RegisteredModel]:
        """Refuse a job that would wait unseen: one for a model no live worker serves while workers live. With no
        live worker at all, a job for a registered model or the default waits (the service is starting or
        restarting, and /readyz says so). Returns the registrations."""
        models = await self.registered_models()
        if name not in self._served:
            models = await self.registered_models(fresh=True)
        if name in self._served:
            return models
        if self._served:
            raise JobError(
                422, f"model: no live worker serves {name!r}; live workers serve: {', '.join(sorted(self._served))}"
            )
        if name not in models and name != self.settings.default_model:
            names = ", ".join(sorted(models)) or "none yet"
            raise JobError(422, f"model: unknown model {name!r}: no worker is running; registered before: {names}")
        return models

    def _check_limits(self, request: JobRequest, tenant: str) -> None:
        limit = self.settings.max_prompts_per_job
        if len(request.prompts) > limit:
            raise JobError(422, f"prompts: {len(request.prompts)} prompts; this server accepts at most {limit}")
        for i, prompt in enumerate(request.prompts):
            if len(prompt) > self.settings.max_prompt_chars:
                raise JobError(422, f"prompts.{i}: {len(prompt)} characters; at most {self.settings.max_prompt_chars}")
        if request.negative_prompt and len(request.negative_prompt) > self.settings.max_prompt_chars:
            raise JobError(422, f"negative_prompt: longer than {self.settings.max_prompt_chars} characters")
        if request.callback_url and self.settings.webhook_secret_of(tenant) is None:
            raise JobError(422, f"callback_url: tenant {tenant!r} has no webhook secret (GIFT_WEBHOOK_SECRETS)")

    async def _check_room(self) -> None:
        """Refuse new work past the admission mark, as a full Redis would: the memory left is for accepted jobs."""
        if await self.admission.full():
            raise JobError(
                503,
                f"{REDIS_FULL} (this service stops admitting at {self.admission.percent} of Redis's maxmemory, so "
                "that accepted jobs can finish)",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )

    def _check_cost(self, request: JobRequest, model: RegisteredModel | None) -> None:
        """Refuse images whose pipeline call would hold a worker too long: cost is pixels times denoising steps.

        A default model no worker has registered yet has no known native size: only the sizes given are checked.
        """
        height = request.height or (model.info.height if model else None)
        width = request.width or (model.info.width if model else None)
        if height is None or width is None:
            return
        cost, limit = height * width * request.num_inference_steps, self.settings.max_image_cost
        if cost > limit:
            raise JobError(
                422,
                f"height, width, num_inference_steps: {height} x {width} pixels x {request.num_inference_steps} steps "
                f"= {cost:,} pixel-steps per image; this server accepts at most {limit:,} (GIFT_MAX_IMAGE_COST): "
                "ask for fewer steps or a smaller size",
            )

    async def _cache_hits(
        self, request: JobRequest, model: RegisteredModel | None, owner: str | None
    ) -> dict[int, str]:
        """Indices whose image is already stored, with its SHA-256; the cache's TTLs are refreshed."""
        fingerprint = None if model is None else model.fingerprint_for(request)
        if model is None or fingerprint is None:
            return {}
        native = (model.info.height, model.info.width)
        keys = [request_image_key(request, i, fingerprint, native) for i in range(len(request.prompts))]
        found: list[str | None] = []
        for batch in store.lookup_batches(keys, owner):
            shas = replies.optional_texts(await self.redis.mget(batch))
            lookup_keys, args = store.lookup_args(batch, shas, self.settings.image_ttl_seconds, owner)
            found += store.lookup_hits(shas, await self._lookup(keys=lookup_keys, args=args) if lookup_keys else [])
        return {i: sha for i, sha in enumerate(found) if sha}

    async def _create(
        self,
        job_id: str,
        tenant: str,
        request: JobRequest,
        fields: dict[str, str],
        hits: dict[int, str],
        misses: list[int],
        idempotency: tuple[str, str] | None,
    ) -> tuple[dict[str, str], dict[str, str], str | None]:
        """Write the job, its cached images and its work in one atomic step with the tenant's limit check:
        accepted means stored, and a burst of submissions cannot pass the limit. ``idempotency`` is the client's
        key and the request's fingerprint; the key is written in the same step.

        Returns the job's fields and image records as written, and None; or, when the key names a job that still
        exists, nothing written and that job's id.
        """
        assert request.model is not None
        if not misses:
            fields = {**fields, "status": JobState.succeeded.value, "finished_at": fields["created_at"]}
        fields["cached"] = str(len(hits))
        records = {
            str(i): store.image_record(i, request.prompts[i], request.seed_of(i), sha) for i, sha in hits.items()
        }
        increments = {"cache_hits": len(hits)} if hits else {}
        if not misses:
            increments["jobs_succeeded"] = 1
        counters = dict(stats.counter_increment(name, n)[1:] for name, n in increments.items())
        record = redis_keys.idempotency(tenant, idempotency[0]) if idempotency else redis_keys.job(job_id)
        keys = [
            redis_keys.job(job_id),
            redis_keys.job_images(job_id),
            redis_keys.job_work(job_id),
            redis_keys.active(request.model),
            redis_keys.tenant_active(tenant),
            redis_keys.STATS,
            record,
            redis_keys.job_order(job_id),
            redis_keys.WEBHOOKS,
        ]
        chunks = [store.encode_indices(chunk) for chunk in store.chunks(misses, self.settings.chunk_size)]
        limit = self.settings.max_queued_jobs_per_tenant
        args: list[str | int | float] = [
            job_id,
            limit,
            self.settings.job_ttl_seconds,
            time.time(),
            *(json.dumps(part, ensure_ascii=False) for part in (fields, records, chunks, counters)),
            redis_keys.GROUP,
            idempotency[1] if idempotency else "",
        ]
        for _ in range(ADMIT_TRIES):
            named = replies.optional_text(await self.redis.hget(record, "job")) if idempotency else None
            listed = [redis_keys.job(named or job_id), *job_index.index_keys(tenant)]
            answer = await self._admit(keys=[*keys, *listed], args=[*args, named or ""])
            if answer[1] != store.AdmitOutcome.stale:
                break
        else:
            raise JobError(
                409, "Idempotency-Key: its record kept changing while this request was admitted; send it again"
            )
        queued, accepted, *first = answer
        if accepted == store.AdmitOutcome.replay:
            first_id, first_fingerprint = first
            if idempotency and first_fingerprint != idempotency[1]:
                raise JobError(
                    422,
                    f"Idempotency-Key: already used for job {first_id} with a different request; "
                    "send a new key with a new request",
                )
            return fields, records, first_id
        if not accepted:
            raise JobError(
                429,
                f"tenant {tenant!r} has {queued} unfinished jobs; the limit is {limit}: wait for some to finish",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        return fields, records, None

    async def _replay(self, job_id: str, tenant: str) -> JobStatus:
        """The answer to a retried submission: the first job's status now."""
        logs.add(job_id=job_id)
        status = await self.status(job_id, tenant)
        if status is None:  # it expired in the moment since the admission script saw it
            raise JobError(409, f"Idempotency-Key: its job {job_id} expired just now; send the request again")
        log.info("job %s: a submission with its idempotency key answered with it (tenant=%s)", job_id, tenant)
        return status

    async def release_key(self, tenant: str, idempotency_key: str, job_id: str) -> None:
        """Free the tenant's key of a job that cannot give its images (failed, cancelled, evicted), so that the next
        submission under the key makes a new job; a key that names another job by now is left alone."""
        record = redis_keys.idempotency(tenant, idempotency_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(record)
            if replies.optional_text(await pipe.hget(record, "job")) != job_id:
                return
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            pipe.delete(record)
            with contextlib.suppress(WatchError):  # taken by a concurrent submission meanwhile: it is that one's
                await pipe.execute()

    # --- read ---------------------------------------------------------------------------------------

    async def status(self, job_id: str, tenant: str, *, images: bool = True) -> JobStatus | None:
        """The job as its tenant sees it; None when it does not exist or belongs to another tenant."""
        keys = [redis_keys.job(job_id), redis_keys.job_images(job_id)]
        fields, done, records = await self._read(keys=keys, args=[int(images)])
        fields, records = _as_dict(fields), _as_dict(records)
        if not fields or fields.get("tenant") != tenant:
            return None
        return store.status_from({**fields, "done": str(done)}, records if images else None)

    async def wait(self, job_id: str, tenant: str, seconds: float, *, images: bool = True) -> JobStatus | None:
        """Long-poll: the status once the job is terminal, or after ``seconds``, whichever comes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            async with self.events.watch(job_id) as ended:
                status = await self.status(job_id, tenant, images=False)
                remaining = deadline - loop.time()
                if status is None or status.status.terminal or remaining <= 0:
                    break
                await wait_for_event(ended, remaining)
        return await self.status(job_id, tenant, images=images) if status and images else status

    async def cancel(self, job_id: str, tenant: str) -> JobStatus | None:
        status = await self.status(job_id, tenant, images=False)
        if status is None:
            return None
        if status.status in (JobState.succeeded, JobState.failed):
            raise JobError(409, f"job {job_id} already {status.status.value}; only unfinished jobs can be cancelled")
        model, job_tenant, idempotency_key = await self.redis.hmget(redis_keys.job(job_id), store.JOB_KEY_FIELDS)
        keys = store.job_keys(
            job_id, replies.text(model), replies.text(job_tenant), replies.optional_text(idempotency_key)
        )
        args: list[str | int] = [
            job_id,
            JobState.cancelled.value,
            "",
            store.now_iso(),
            self.settings.job_ttl_seconds,
            redis_keys.JOB_ENDED,
        ]
        state = await self.redis.eval(store.END_JOB, len(keys), *keys, *args)
        if state == JobState.cancelled.value:
            log.info("job %s cancelled by tenant %s after %d of %d images", job_id, tenant, status.done, status.total)
        return await self.status(job_id, tenant)

    async def image(self, sha256: str, tenant: str) -> bytes | None:
        """The tenant's own image (cache scope ``tenant``), else the deployment's shared one; never another's own."""
        for owner in (tenant, None):
            value = replies.data(await self.blobs.get(redis_keys.png(sha256, owner)))
            if (data := await self._bytes(value, BlobName(sha256, owner))) is not None:
                return data
        return None

    async def _bytes(self, value: bytes | None, name: BlobName) -> bytes | None:
        """An image key's value is the bytes (kept in Redis) or empty (kept in the blob store, see blobs.py)."""
        if value or value is None or self.blob_store is None:
            return value or None
        return await asyncio.to_thread(self.blob_store.get, name)

    async def archive_members(self, status: JobStatus, owner: str | None) -> AsyncIterator[tuple[int, bytes]]:
        """The PNG bytes of a finished job's images in index order, fetched a batch at a time."""
        for start in range(0, len(status.images), 64):
            batch = status.images[start : start + 64]
            values = await self.blobs.mget([redis_keys.png(image.sha256, owner) for image in batch])
            for image, value in zip(batch, values, strict=True):
                blob = await self._bytes(replies.data(value), BlobName(image.sha256, owner))
                if blob is None:
                    raise JobError(410, f"image {image.index} ({image.sha256}) was evicted from storage")
                yield image.index, blob

    async def missing_images(self, status: JobStatus, owner: str | None) -> list[int]:
        """Indices whose bytes are gone (evicted): checked before an archive starts streaming."""
        missing = []
        for start in range(0, len(status.images), KEY_BATCH):
            batch = status.images[start : start + KEY_BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for image in batch:
                    pipe.exists(redis_keys.png(image.sha256, owner))
                exists = await pipe.execute()
            missing += [image.index for image, ok in zip(batch, exists, strict=True) if not ok]
        return missing

    async def request_of(self, job_id: str) -> JobRequest:
        return JobRequest.model_validate_json(replies.text(await self.redis.hget(redis_keys.job(job_id), "request")))

    async def metrics_snapshot(self, worker_seen_seconds: float) -> stats.Snapshot:
        """One read of everything /metrics reports."""
        names = {*replies.texts(await self.redis.hkeys(redis_keys.MODELS)), self.settings.default_model}
        queued_jobs, queued_images, now = {}, 0, time.time()
        oldest = now
        for name in names:
            keys, args = store.queued_images_args(
                name, replies.texts(await self.redis.zrange(redis_keys.active(name), 0, -1))
            )
            queued_jobs[name], images = await self._queued(keys=keys, args=args)
            queued_images += images
            first = await self.redis.zrange(redis_keys.active(name), 0, 0, withscores=True)
            oldest = min([oldest, *(float(created) for _, created in cast(list[tuple[str, float]], first))])
        memory = await self.redis.info("memory")
        return {
            "stats": replies.text_hash(await self.redis.hgetall(redis_keys.STATS)),
            "queued_jobs": queued_jobs,
            "queued_images": queued_images,
            "workers": await self.redis.zcount(redis_keys.WORKERS, now - worker_seen_seconds, "+inf"),
            "oldest_queued_seconds": round(now - oldest, 3),
            "redis_memory": (int(memory["used_memory"]), int(memory["maxmemory"])),
            "admit_fraction": self.settings.redis_admit_fraction,
        }


def _as_dict(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns it (name, value, name, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
