"""The worker's side of Redis: read work, take over a dead worker's work, store images, acknowledge.

Order of writes for each image: PNG bytes (SET NX: stored once), then the cache entry, then the job's record
(HSETNX: recorded once), then the stream acknowledgement. A worker killed between any two steps leaves its
chunk pending; whoever takes it over finds the finished images in the cache and records them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from redis import Redis
from redis import exceptions as redis_errors

from gift_common import redis_keys
from gift_common.schemas import JobRequest, JobState
from gift_common.settings import WorkerSettings
from services.generator import logs, replies, stats, store
from services.generator.blobs import BlobName, BlobStore

log = logging.getLogger("gift.worker")
# Redis down, or full (maxmemory refuses writes): either way what is in memory is kept and retried, never dropped.
REDIS_UNAVAILABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.OutOfMemoryError)
READ_TRIES = 3  # how often a read of new work starts again when a job became active meanwhile


@dataclass(frozen=True)
class Chunk:
    job_id: str
    entry_id: str
    indices: list[int]


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    tenant: str
    model: str
    request: JobRequest
    created_at: float
    idempotency_key: str | None
    request_id: str | None = None  # of the request that created the job: its log lines carry it
    traceparent: str | None = None  # of the span that enqueued it: its spans continue that trace

    def ids(self) -> dict[str, str | None]:
        """What the log lines about this job carry (logs.py)."""
        return {"job_id": self.job_id, "tenant": self.tenant, "request_id": self.request_id}


@dataclass(frozen=True)
class Recorded:
    outcome: store.RecordOutcome
    done: int
    total: int


class WorkerQueue:
    def __init__(self, redis: Redis, settings: WorkerSettings, consumer: str, blob_store: BlobStore | None = None):
        self.redis, self.settings, self.consumer, self.blob_store = redis, settings, consumer, blob_store
        self._cursor: dict[str, int] = {}
        self.profile: dict[str, object] = {}  # what GET /v1/workers shows of this worker: models, device, batch size
        self.images_done = 0
        self._record = redis.register_script(store.RECORD_IMAGES)
        self._end = redis.register_script(store.END_JOB)
        self._read = redis.register_script(store.READ_ROUND)
        self._lookup = redis.register_script(store.CACHE_LOOKUP)

    # --- presence -----------------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        height: int,
        width: int,
        fingerprint: str,
        stand_in: bool = False,
        schedulers: dict[str, str] | None = None,
    ) -> None:
        """``fingerprint`` keys the images of jobs that name no scheduler (this worker's setting); ``schedulers``
        the fingerprint under each scheduler a job may name, so the API's cache lookup finds their images too."""
        previous = self.redis.hget(redis_keys.MODELS, name)
        if previous and json.loads(previous)["fingerprint"] != fingerprint:
            log.warning("model %s was registered with other weights; this worker's now take its place", name)
        entry = {"height": height, "width": width, "fingerprint": fingerprint, "stand_in": stand_in}
        entry |= {"schedulers": schedulers} if schedulers else {}
        self.redis.hset(redis_keys.MODELS, name, json.dumps(entry))
        self.redis.hset(redis_keys.MODELS_SEEN, name, time.time())

    def heartbeat(self, held: dict[str, list[str]], models: Iterable[str]) -> None:
        """Say this worker lives and serves ``models``, and keep its held chunks from looking abandoned (XCLAIM
        resets idle time)."""
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(redis_keys.WORKERS, {self.consumer: now})
            if seen := {name: str(now) for name in models}:
                pipe.hset(redis_keys.MODELS_SEEN, mapping=seen)  # type: ignore[arg-type]  # str values are fine
            pipe.set(redis_keys.worker(self.consumer), self._presence(held), ex=self._presence_ttl())
            for job_id, entries in held.items():
                # ignore: redis-py wants message_ids as an invariant List[StreamIdT], which a list[str] is not
                pipe.xclaim(redis_keys.job_work(job_id), redis_keys.GROUP, self.consumer, 0, entries, justid=True)  # type: ignore[arg-type]
            pipe.execute(raise_on_error=False)

    def _presence(self, held: dict[str, list[str]]) -> str:
        chunks = {job_id: len(entries) for job_id, entries in held.items()}
        return json.dumps({**self.profile, "held": chunks, "images_done": self.images_done})

    def _presence_ttl(self) -> int:
        """Long enough to outlive a few missed heartbeats; the API shows only workers seen lately anyway."""
        return max(1, round(max(self.settings.worker_seen_seconds, 5 * self.settings.heartbeat_seconds)))

    def release(self, held: dict[str, list[str]]) -> None:
        """On a clean stop, mark held chunks as long idle, so other workers take them over at once."""
        idle_ms = int(self.settings.claim_timeout_seconds * 1000) * 10
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, entries in held.items():
                work = redis_keys.job_work(job_id)
                # ignore: as in heartbeat
                pipe.xclaim(work, redis_keys.GROUP, self.consumer, 0, entries, idle=idle_ms, justid=True)  # type: ignore[arg-type]
            pipe.execute(raise_on_error=False)
        if held:
            log.info("released %d held chunk(s) to other workers", sum(map(len, held.values())))

    def leave(self) -> None:
        self.redis.zrem(redis_keys.WORKERS, self.consumer)
        self.redis.delete(redis_keys.worker(self.consumer))

    # --- reading work -------------------------------------------------------------------------------

    def read_new(self, model: str, max_chunks: int) -> list[Chunk]:
        """A round of READ_ROUND over the model's active jobs, read first to name their keys. A job that became
        active in between makes the round start again, READ_TRIES times at most; the last try leaves such a job
        to the next round."""
        cursor = self._cursor.get(model, 0)
        for tries_left in reversed(range(READ_TRIES)):
            jobs = replies.texts(self.redis.zrange(redis_keys.active(model), 0, -1))
            keys, args = store.read_round_args(model, jobs, self.consumer, max_chunks, cursor, strict=tries_left > 0)
            if (answer := self._read(keys=keys, args=args)) is not None:
                break
        self._cursor[model], entries = answer
        return [Chunk(job, entry, store.decode_indices(indices)) for job, entry, indices in entries]

    def reclaim(self, model: str, held: dict[str, list[str]]) -> list[Chunk]:
        """Take over chunks left idle past the claim timeout; fail poison chunks.

        Idle means no heartbeat claimed it: its worker died, or stopped, or lost it (a read whose reply an outage
        cut off, a batch that failed). This worker's own chunks count too, except those it ``held``.
        """
        idle_ms = int(self.settings.claim_timeout_seconds * 1000)
        jobs = replies.texts(self.redis.zrange(redis_keys.active(model), 0, -1))
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in jobs:
                pipe.xpending_range(redis_keys.job_work(job_id), redis_keys.GROUP, "-", "+", 100, idle=idle_ms)
            pendings: list[list[replies.Pending] | Exception] = pipe.execute(raise_on_error=False)
        taken: list[Chunk] = []
        for job_id, pending in zip(jobs, pendings, strict=True):
            if isinstance(pending, Exception):  # the job ended meanwhile
                continue
            stale = [p for p in pending if p["message_id"] not in held.get(job_id, ())]
            if poison := [p for p in stale if p["times_delivered"] >= self.settings.max_deliveries]:
                times = poison[0]["times_delivered"]
                self.fail_job(job_id, f"a chunk was delivered {times} times and never finished: workers died on it")
            elif stale:
                taken += self._claim(job_id, stale, idle_ms)
        if taken:
            self.redis.hincrby(*stats.counter_increment("chunks_reclaimed", len(taken)))
        return taken

    def _claim(self, job_id: str, stale: list[replies.Pending], idle_ms: int) -> list[Chunk]:
        try:
            ids = [p["message_id"] for p in stale]
            # ignore: as in heartbeat
            claimed = self.redis.xclaim(redis_keys.job_work(job_id), redis_keys.GROUP, self.consumer, idle_ms, ids)  # type: ignore[arg-type]
        except redis_errors.ResponseError:  # the job ended meanwhile
            return []
        with logs.bound(job_id=job_id):
            log.info(
                "job %s: took over %d chunk(s) from %s", job_id, len(claimed), sorted({p["consumer"] for p in stale})
            )
        entries = replies.entries(claimed)
        return [Chunk(job_id, entry, store.decode_indices(fields["indices"])) for entry, fields in entries]

    def job_info(self, job_id: str) -> JobInfo | None:
        names = ["tenant", "model", "request", "created_at", "status", "idempotency_key", *store.ORIGIN_FIELDS]
        tenant, model, request, created_at, state, idempotency_key, *origin = self.redis.hmget(
            redis_keys.job(job_id), names
        )
        if request is None or state not in store.LIVE_STATES:
            return None
        created = store.parse_time(replies.text(created_at))
        return JobInfo(
            job_id,
            replies.text(tenant),
            replies.text(model),
            JobRequest.model_validate_json(request),
            created,
            replies.optional_text(idempotency_key),
            *map(replies.optional_text, origin),
        )

    def live(self, job_ids: set[str]) -> set[str]:
        ids = sorted(job_ids)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(redis_keys.job(job_id), "status")
            states = pipe.execute()
        return {job_id for job_id, state in zip(ids, states, strict=True) if state in store.LIVE_STATES}

    # --- storing ----------------------------------------------------------------------------------

    def cached(self, keys: list[str], owner: str | None) -> list[str | None]:
        """The PNG SHA-256 stored for each content key, or None; a hit whose bytes were evicted is a miss."""
        found: list[str | None] = []
        for batch in store.lookup_batches(keys, owner):
            shas = replies.optional_texts(self.redis.mget(batch))
            lookup_keys, args = store.lookup_args(batch, shas, self.settings.image_ttl_seconds, owner)
            found += store.lookup_hits(shas, self._lookup(keys=lookup_keys, args=args) if lookup_keys else [])
        return found

    def store_pngs(self, blobs: Redis, items: list[tuple[str | None, str, str, bytes]]) -> None:
        """Store (owner, content key, sha256, PNG): bytes first, once; then the cache entry that names them.

        With a blob store the bytes go there first and Redis keeps an empty key in their place (see blobs.py).
        """
        ttl = self.settings.image_ttl_seconds
        if self.blob_store is not None:
            for owner, _, sha, png in items:
                self.blob_store.put(BlobName(sha, owner), png)
        with blobs.pipeline(transaction=False) as pipe:
            for owner, _, sha, png in items:
                pipe.set(redis_keys.png(sha, owner), png if self.blob_store is None else b"", ex=ttl, nx=True)
                pipe.expire(redis_keys.png(sha, owner), ttl)
            for owner, key, sha, _ in items:
                pipe.set(redis_keys.cache(key, owner), sha, ex=ttl)
            pipe.execute()

    def record(self, job: JobInfo, images: list[tuple[int, str, bool]], replaced: Collection[int] = ()) -> Recorded:
        """Record (index, sha256, cached) of one job, ``replaced`` the indices drawn again after the model's safety
        checker blacked out their first draw; finishes the job when its last image is in."""
        args: list[str | int] = [
            job.job_id,
            store.now_iso(),
            self.settings.job_ttl_seconds,
            redis_keys.JOB_ENDED,
            redis_keys.JOB_PROGRESS,
        ]
        for index, sha, cached in images:
            record = store.image_record(index, job.request.prompts[index], job.request.seed_of(index), sha)
            args += [index, record, "1" if cached else "r" if index in replaced else "0"]
        keys = store.job_keys(job.job_id, job.model, job.tenant, job.idempotency_key)
        outcome, done, total = self._record(keys=keys, args=args)
        if outcome != store.RecordOutcome.dropped:
            self.images_done += len(images)
        if outcome == store.RecordOutcome.finished:
            self._observe_end(job, "jobs_succeeded")
            log.info("job %s succeeded: %d images in %.1f s", job.job_id, total, time.time() - job.created_at)
        return Recorded(store.RecordOutcome(outcome), done, total)

    def ack(self, job_id: str, entry_ids: list[str]) -> None:
        if entry_ids:
            work = redis_keys.job_work(job_id)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(work, redis_keys.GROUP, *entry_ids)
                pipe.xdel(work, *entry_ids)
                pipe.execute()

    def fail_job(self, job_id: str, error: str) -> None:
        read = self.redis.hmget(redis_keys.job(job_id), [*store.JOB_KEY_FIELDS, "request_id"])
        model, tenant, idempotency_key, request_id = read
        if model is None:
            return
        keys = store.job_keys(job_id, replies.text(model), replies.text(tenant), replies.optional_text(idempotency_key))
        args: list[str | int] = [
            job_id,
            JobState.failed.value,
            error,
            store.now_iso(),
            self.settings.job_ttl_seconds,
            redis_keys.JOB_ENDED,
        ]
        if self._end(keys=keys, args=args) == JobState.failed.value:
            self.redis.hincrby(*stats.counter_increment("jobs_failed"))
            with logs.bound(job_id=job_id, tenant=replies.text(tenant), request_id=replies.optional_text(request_id)):
                log.error("job %s failed: %s", job_id, error)

    # --- adapters ---------------------------------------------------------------------------------

    def register_layers(self, model: str, layers: dict[str, list[int]]) -> None:
        """Publish the model's adaptable layers, which the API checks uploaded adapters against."""
        self.redis.set(redis_keys.model_layers(model), json.dumps(layers, separators=(",", ":")))

    def adapter_users(self, adapter: str, tenants: Collection[str]) -> set[str]:
        """Those of ``tenants`` that may still use ``adapter``: their own, or a shared one, is stored."""
        ordered = sorted(tenants)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(redis_keys.adapter(adapter))
            for tenant in ordered:
                pipe.exists(redis_keys.adapter(adapter, tenant))
            shared, *own = pipe.execute()
        return {tenant for tenant, exists in zip(ordered, own, strict=True) if shared or exists}

    def adapter_file(self, blobs: Redis, adapter: str, owners: Iterable[str | None]) -> bytes | None:
        """The adapter's file from the first of ``owners``' scopes that holds it; None when none does. The bytes
        are the same in every scope: the id is their SHA-256."""
        for owner in owners:
            value = blobs.get(redis_keys.adapter_file(adapter, owner))
            if value is None:
                continue
            if value or self.blob_store is None:
                return bytes(value)  # type: ignore[arg-type]  # a client without decoding answers bytes
            if (stored := self.blob_store.get(BlobName(adapter, owner, "safetensors"))) is not None:
                return stored
        return None

    def observe_adapter(self, loaded: bool, hit: bool, seconds: float | None) -> None:
        if not (loaded or hit or seconds is not None):
            return  # a call on the base model that was on it already: nothing to count
        with self.redis.pipeline(transaction=False) as pipe:
            if loaded:
                pipe.hincrby(*stats.counter_increment("adapter_loads"))
            if hit:
                pipe.hincrby(*stats.counter_increment("adapter_cache_hits"))
            if seconds is not None:
                for args in stats.histogram_increments("adapter_switch_seconds", seconds):
                    pipe.hincrbyfloat(*args)
            pipe.execute()

    def observe_batch(self, generated: int, hits: int, seconds: float) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            if generated:
                pipe.hincrby(*stats.counter_increment("images_generated", generated))
                for args in stats.histogram_increments("batch_size", generated):
                    pipe.hincrbyfloat(*args)
                for args in stats.histogram_increments("batch_seconds", seconds):
                    pipe.hincrbyfloat(*args)
            if hits:
                pipe.hincrby(*stats.counter_increment("cache_hits", hits))
            pipe.execute()

    def _observe_end(self, job: JobInfo, counter: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(*stats.counter_increment(counter))
            for args in stats.histogram_increments("job_seconds", time.time() - job.created_at):
                pipe.hincrbyfloat(*args)
            pipe.execute()
