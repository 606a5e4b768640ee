"""The generator's data model in Redis: how a job is stored, and the atomic scripts that change it.

Shared by the API (which creates, reads and cancels jobs) and the workers (which read work and record
images), so that both sides change a job only through the same few atomic steps:

- ``job`` hash: the request, the tenant, the state and the ``cached`` counter;
- ``job_images`` hash: index -> finished image record, written once per index (HSETNX), so a chunk that is
  redone after a worker died cannot record or count an image twice; ``done`` is its length;
- ``job_order`` list: the indices of ``job_images`` in the order they were recorded (the event stream's ids);
- ``job_work`` stream: the job's unfinished chunks, read through one consumer group; a chunk is acknowledged
  only after all its images are recorded, so a worker's death leaves it pending for another to take over;
- ``active:{model}`` zset: jobs with work left, what workers poll round-robin.

Every key a script touches arrives in its KEYS, named in Python by gift_common.redis_keys, so a Redis Cluster can
serve them (all keys share the ``{gift}`` hash tag). Where the keys depend on data (the job an idempotency record
names, the jobs of a model's active set, the PNG a cache entry names), the caller reads that data first and passes
it with its keys, and the script checks it again before relying on it.

The scripts are Lua files in ``lua/`` (each says its KEYS, ARGV and answer), read once when this module is imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import IntEnum
from importlib.resources import files
from typing import TypedDict

from gift_common import redis_keys
from gift_common.schemas import ImageInfo, JobRequest, JobState, JobStatus
from services.generator import job_index

LIVE_STATES = (JobState.queued.value, JobState.running.value)
LUA = files(__package__) / "lua"


def _script(name: str, *functions: str) -> str:
    """The script ``lua/NAME.lua`` with the shared ``functions`` files it calls put before its code (after its
    ``#!lua`` flags line, which Redis wants first)."""
    text = (LUA / f"{name}.lua").read_text()
    flags, code = text.split("\n", 1) if text.startswith("#!lua") else ("", text)
    return "\n".join([*filter(None, [flags]), *((LUA / f"{f}.lua").read_text() for f in functions), code])


# Record finished images of one job; finish the job when the last one is in. Returns a RecordOutcome, done, total.
RECORD_IMAGES = _script("record_images", "job_index_functions", "end_job_functions")


class RecordOutcome(IntEnum):
    """What RECORD_IMAGES did with a job (the numbers its Lua returns)."""

    dropped = -1  # the job was no longer live (cancelled or failed): nothing recorded
    running = 1  # recorded; images are left
    finished = 2  # recorded the last image: the job just succeeded


# End a live job early (cancelled or failed), allowed over maxmemory so that a cancel works while Redis is full.
END_JOB = _script("end_job", "job_index_functions", "end_job_functions")  # returns the job's state afterwards
# An adaptation job's end (adaptations.py) and its progress; each returns the job's state afterwards.
END_ADAPTATION = _script("end_adaptation")
ADAPTATION_STEP = _script("adaptation_step")

# Accept a job: the tenant's limit check and every write of the job in one atomic step.
ADMIT_JOB = _script("admit_job", "job_index_functions")


class AdmitOutcome(IntEnum):
    """What ADMIT_JOB did (the numbers its Lua returns)."""

    refused = 0  # the tenant has its limit of unfinished jobs: nothing written
    accepted = 1  # the job is written
    replay = 2  # the idempotency key names a job that still exists: that job is the answer
    stale = 3  # the idempotency record changed since the caller read it: nothing written, read it again


# Read a job and its image records in one step that Redis allows over maxmemory.
READ_JOB = _script("read_job")

# Look up images by content key (after an MGET of the entries), refreshing the TTLs of the hits.
CACHE_LOOKUP = _script("cache_lookup")
KEYS_PER_LOOKUP = 512  # a lookup of more keys is split, so one script never holds Redis for long


def lookup_batches(content_keys: list[str], owner: str | None = None) -> list[list[str]]:
    """The cache keys of ``content_keys`` in ``owner``'s scope, in order, in batches of one lookup each."""
    keys = [redis_keys.cache(key, owner) for key in content_keys]
    return [keys[start : start + KEYS_PER_LOOKUP] for start in range(0, len(keys), KEYS_PER_LOOKUP)]


def lookup_args(
    cache_keys: list[str], shas: list[str | None], ttl: int, owner: str | None = None
) -> tuple[list[str], list[str | int]]:
    """(KEYS, ARGV) of CACHE_LOOKUP for the entries of ``cache_keys`` that named a PNG (``shas``, as read)."""
    keys: list[str] = []
    args: list[str | int] = [ttl]
    for key, sha in zip(cache_keys, shas, strict=True):
        if sha:
            keys += [key, redis_keys.png(sha, owner)]
            args.append(sha)
    return keys, args


def lookup_hits(shas: list[str | None], refreshed: list[str | None]) -> list[str | None]:
    """Each entry's hit (the SHA-256 of its PNG) or None, from the entries as read and CACHE_LOOKUP's answer."""
    answers = iter(refreshed)
    return [next(answers) if sha else None for sha in shas]


def _active_call(job_ids: list[str], second: Callable[[str], str]) -> list[str]:
    """The key pairs of lua/active_jobs_function.lua: each job's hash and its ``second`` key, in the order of
    ``job_ids``."""
    return [key for job_id in job_ids for key in (redis_keys.job(job_id), second(job_id))]


# Read new chunks of a model's active jobs, taking turns between tenants, then between a tenant's jobs.
READ_ROUND = _script("read_round", "active_jobs_function")


def read_round_args(
    model: str, job_ids: list[str], consumer: str, max_chunks: int, cursor: int, *, strict: bool
) -> tuple[list[str], list[str | int]]:
    """(KEYS, ARGV) of READ_ROUND over ``job_ids``, the model's active set as the caller read it."""
    keys = [redis_keys.active(model), redis_keys.turns(model), *_active_call(job_ids, redis_keys.job_work)]
    return keys, [redis_keys.GROUP, consumer, max_chunks, cursor, int(strict), *job_ids]


# How many jobs of a model have work queued, and how many of their images are not made yet (for /metrics).
QUEUED_IMAGES = _script("queued_images", "active_jobs_function")


def queued_images_args(model: str, job_ids: list[str]) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) of QUEUED_IMAGES over ``job_ids``, the model's active set as the caller read it."""
    return [redis_keys.active(model), *_active_call(job_ids, redis_keys.job_images)], job_ids


# One page of a listing, read-only (job_index.py: the index the scripts above keep).
LIST_PAGE = _script("list_page")  # returns {job id, score, ...}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def new_job_fields(
    job_id: str, tenant: str, request: JobRequest, created_at: str, origin: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """The job hash's first fields; ``origin`` is what its workers' logs and traces carry on (ORIGIN_FIELDS)."""
    return {
        "id": job_id,
        "tenant": tenant,
        "model": request.model or "",
        "status": JobState.queued.value,
        "total": str(len(request.prompts)),
        "cached": "0",
        "created_at": created_at,
        "priority": str(request.priority or 0),
        "steps": str(request.num_inference_steps),
        "request": request.model_dump_json(),
        **({"callback_url": request.callback_url} if request.callback_url else {}),
        **{name: value for name, value in (origin or {}).items() if value},
    }


# The fields of the job hash that say where the job came from: the id of the request that created it (logs.py) and
# the W3C traceparent of the span that enqueued it (tracing.py), stored only with tracing on.
ORIGIN_FIELDS = ("request_id", "traceparent")


class ImageRecord(TypedDict):
    """A finished image as the ``job_images`` hash stores it (JSON)."""

    index: int
    prompt: str
    seed: int
    sha256: str


def image_record(index: int, prompt: str, seed: int, sha256: str) -> str:
    return json.dumps(ImageRecord(index=index, prompt=prompt, seed=seed, sha256=sha256))


def image_info(record: ImageRecord) -> ImageInfo:
    """The public form of a stored image record (see image_record)."""
    return ImageInfo(**record, url=f"/v1/images/{record['sha256']}")


def status_from(fields: dict[str, str], records: dict[str, str] | None) -> JobStatus:
    """Build the public JobStatus; ``records`` is the images hash, or None when images are not wanted."""
    parsed = [image_info(json.loads(record)) for record in (records or {}).values()]
    images = sorted(parsed, key=lambda image: image.index)
    return JobStatus(
        id=fields["id"],
        status=JobState(fields["status"]),
        total=int(fields["total"]),
        done=int(fields.get("done", len(images))),
        cached=int(fields.get("cached", 0)),
        replaced=int(fields.get("replaced", 0)),
        error=fields.get("error") or None,
        created_at=datetime.fromisoformat(fields["created_at"]),
        finished_at=datetime.fromisoformat(fields["finished_at"]) if fields.get("finished_at") else None,
        num_inference_steps=int(fields["steps"]) if fields.get("steps") else None,
        images=images,
    )


JOB_KEY_FIELDS = ("model", "tenant", "idempotency_key")  # the job's fields that job_keys needs, in its order


def job_keys(job_id: str, model: str, tenant: str, idempotency_key: str | None) -> list[str]:
    """The KEYS of RECORD_IMAGES and END_JOB, in their order; ``idempotency_key`` is the job's field of that name."""
    return [
        redis_keys.job(job_id),
        redis_keys.job_images(job_id),
        redis_keys.active(model),
        redis_keys.tenant_active(tenant),
        redis_keys.job_work(job_id),
        redis_keys.job_order(job_id),
        redis_keys.WEBHOOKS,
        idempotency_key or redis_keys.job(job_id),
        *job_index.index_keys(tenant),
    ]


def chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def encode_indices(indices: list[int]) -> str:
    return ",".join(map(str, indices))


def decode_indices(text: str | bytes) -> list[int]:
    text = text.decode() if isinstance(text, bytes) else text
    return [int(i) for i in text.split(",") if i]
