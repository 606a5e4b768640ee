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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum
from typing import TypedDict

from gift_common import redis_keys
from gift_common.schemas import ImageInfo, JobRequest, JobState, JobStatus
from services.generator import job_index

LIVE_STATES = (JobState.queued.value, JobState.running.value)

# Shared by the scripts that end a job: the end state, no more work, no longer counted, expiry, a wake-up.
# A job that asked for a webhook gets its delivery queued in the same step, so no end goes unannounced.
# KEYS: job, images, active, tenant_active, work, order, webhooks, and the job's idempotency record (the job key
# again when it has none), which the scripts check against the job's field before any write; then index_keys.
_END_JOB_FUNCTION = (
    job_index.INDEX_FUNCTION
    + """
local function foreign_record()
  if (redis.call('HGET', KEYS[1], 'idempotency_key') or KEYS[1]) == KEYS[8] then return nil end
  return redis.error_reply('KEYS[8] ' .. KEYS[8] .. ' is not the idempotency record of ' .. KEYS[1])
end

local function end_job(job_id, state, now, ttl, channel)
  redis.call('HSET', KEYS[1], 'status', state, 'finished_at', now)
  redis.call('ZREM', KEYS[3], job_id)
  redis.call('SREM', KEYS[4], job_id)
  redis.call('DEL', KEYS[5])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[6], ttl)
  if KEYS[8] ~= KEYS[1] then redis.call('EXPIRE', KEYS[8], ttl) end
  redis.call('PUBLISH', channel, job_id)
  if redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
    redis.call('XADD', KEYS[7], '*', 'job', job_id, 'attempt', 1)
  end
  index_move(9, job_id, state, ttl)
end
"""
)

# Record finished images of one job; finish the job when the last one is in.
# KEYS: job_keys. ARGV: job id, now, ttl, end channel, progress channel, then (index, record, cached).
# Returns {outcome, done, total}, the outcome a RecordOutcome.
RECORD_IMAGES = (
    _END_JOB_FUNCTION
    + """
local foreign = foreign_record()
if foreign then return foreign end
local state = redis.call('HGET', KEYS[1], 'status')
if state ~= 'queued' and state ~= 'running' then return {-1, 0, 0} end
local recorded = 0
for i = 6, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('RPUSH', KEYS[6], ARGV[i])
    recorded = recorded + 1
    if ARGV[i + 2] == '1' then redis.call('HINCRBY', KEYS[1], 'cached', 1) end
  end
end
if recorded > 0 then redis.call('PUBLISH', ARGV[5], ARGV[1]) end
local done = redis.call('HLEN', KEYS[2])
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
if done < total then
  if state == 'queued' then index_move(9, ARGV[1], 'running', ARGV[3]) end
  redis.call('HSET', KEYS[1], 'status', 'running')
  return {1, done, total}
end
end_job(ARGV[1], 'succeeded', ARGV[2], ARGV[3], ARGV[4])
return {2, done, total}
"""
)


class RecordOutcome(IntEnum):
    """What RECORD_IMAGES did with a job (the numbers its Lua returns)."""

    dropped = -1  # the job was no longer live (cancelled or failed): nothing recorded
    running = 1  # recorded; images are left
    finished = 2  # recorded the last image: the job just succeeded


# End a live job early (cancelled or failed): its remaining work is deleted so no worker reads it again.
# Allowed over maxmemory (it frees the job's work), so a cancel works while Redis is full.
# KEYS: job_keys. ARGV: job id, new state, error, now, ttl, channel.
# Returns the state the job has afterwards.
END_JOB = (
    "#!lua flags=allow-oom\n"
    + _END_JOB_FUNCTION
    + """
local foreign = foreign_record()
if foreign then return foreign end
local state = redis.call('HGET', KEYS[1], 'status')
if not state then return false end
if state ~= 'queued' and state ~= 'running' then return state end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
end_job(ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6])
return ARGV[2]
"""
)

# Accept a job: the tenant's limit check and every write of the job are one atomic step, so a burst of submissions
# cannot pass the limit, and a refused write (Redis full) leaves nothing behind. A submission with an idempotency
# key whose job still exists is not a new one: the key (written with the job, expiring with it) names that job.
# KEYS: job, images, work, active, tenant_active, stats, idempotency key (or the job key again when none is sent),
# order, webhooks, the key of the job the idempotency record named when the caller read it (else the job key), then
# job_index.index_keys.
# ARGV: job id, the tenant's limit, ttl, creation score, then JSON: fields {name: value}, records {index: record},
# chunks [encoded indices], counters {stats field: increment}, and the consumer group, then the request's
# fingerprint ('' without a key) and the id of the job the record named when read ('' for none).
# Returns the tenant's unfinished jobs before this one, and an AdmitOutcome: accepted, or refused for the limit;
# replay, with the first job's id and the fingerprint of its request, when the idempotency key names a job that
# exists; stale, nothing written, when the record names another job than it did when read (read it again).
ADMIT_JOB = (
    job_index.INDEX_FUNCTION
    + """
local keyed = KEYS[7] ~= KEYS[1]
if keyed then
  local first = redis.call('HMGET', KEYS[7], 'job', 'fingerprint')
  if (first[1] or '') ~= ARGV[11] then return {0, 3} end
  if first[1] and redis.call('EXISTS', KEYS[10]) == 1 then return {0, 2, first[1], first[2]} end
end
local queued = redis.call('SCARD', KEYS[5])
if queued >= tonumber(ARGV[2]) then return {queued, 0} end
for name, value in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', KEYS[1], name, value) end
for index, record in pairs(cjson.decode(ARGV[6])) do
  redis.call('HSET', KEYS[2], index, record)
  redis.call('RPUSH', KEYS[8], index)
end
for name, amount in pairs(cjson.decode(ARGV[8])) do redis.call('HINCRBY', KEYS[6], name, amount) end
if keyed then
  redis.call('DEL', KEYS[7])
  redis.call('HSET', KEYS[7], 'job', ARGV[1], 'fingerprint', ARGV[10])
  redis.call('HSET', KEYS[1], 'idempotency_key', KEYS[7])
end
local chunks = cjson.decode(ARGV[7])
if #chunks == 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[8], ARGV[3])
  if keyed then redis.call('EXPIRE', KEYS[7], ARGV[3]) end
  if redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
    redis.call('XADD', KEYS[9], '*', 'job', ARGV[1], 'attempt', 1)
  end
  index_add(11, ARGV[1], ARGV[4], 'succeeded', ARGV[3])
  return {queued, 1}
end
redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[9], '0', 'MKSTREAM')
for _, indices in ipairs(chunks) do redis.call('XADD', KEYS[3], '*', 'indices', indices) end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
index_add(11, ARGV[1], ARGV[4], 'queued', ARGV[3])
return {queued, 1}
"""
)


class AdmitOutcome(IntEnum):
    """What ADMIT_JOB did (the numbers its Lua returns)."""

    refused = 0  # the tenant has its limit of unfinished jobs: nothing written
    accepted = 1  # the job is written
    replay = 2  # the idempotency key names a job that still exists: that job is the answer
    stale = 3  # the idempotency record changed since the caller read it: nothing written, read it again


# Read a job and, unless ARGV[1] is '0', its image records, in one step that Redis allows over maxmemory (a
# MULTI is refused there). KEYS: job, images. Returns {job fields (flat), images done, records (flat)}.
READ_JOB = """#!lua flags=no-writes
local records = {}
if ARGV[1] ~= '0' then records = redis.call('HGETALL', KEYS[2]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('HLEN', KEYS[2]), records}
"""

# Look up images by content key, the second of two steps: the caller has read the cache entries (MGET), and this
# keeps those that still name the PNG read and whose bytes are still stored, refreshing both TTLs (least recently
# used is what expires); an entry evicted or rewritten meanwhile is a miss. Two round trips for a whole job.
# KEYS: (cache key, PNG key) of each entry that named a PNG. ARGV: ttl, then the SHA-256 each entry named.
# Returns, for each pair, the SHA-256, or false for a miss.
CACHE_LOOKUP = """
local found = {}
for i = 1, #ARGV - 1 do
  local cache, png, sha = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i + 1]
  local hit = redis.call('GET', cache) == sha and redis.call('EXPIRE', png, ARGV[1]) == 1
  if hit then redis.call('EXPIRE', cache, ARGV[1]) end
  table.insert(found, hit and sha)
end
return found
"""
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


# The model's active jobs (ZRANGE of KEYS[1]) in their order, as {id, k}: KEYS[k] and KEYS[k + 1] are the job's
# keys. The caller read the set first: ARGV[from], ARGV[from + 1], ... are the ids it saw, with their key pairs in
# KEYS from KEYS[base] on. A job it did not see (active since) is left out; with ``strict`` it makes the answer nil.
_ACTIVE_JOBS_FUNCTION = """
local function active_jobs(base, from, strict)
  local slot = {}
  for i = from, #ARGV do slot[ARGV[i]] = base + 2 * (i - from) end
  local jobs = {}
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if slot[id] then table.insert(jobs, {id = id, k = slot[id]})
    elseif strict then return nil end
  end
  return jobs
end
"""


def _active_call(job_ids: list[str], second: Callable[[str], str]) -> list[str]:
    """The key pairs of _ACTIVE_JOBS_FUNCTION: each job's hash and its ``second`` key, in the order of ``job_ids``."""
    return [key for job_id in job_ids for key in (redis_keys.job(job_id), second(job_id))]


# Passes over a model's active jobs that take turns between tenants first, then between a tenant's jobs of the
# highest priority (rotated by a per-tenant counter in the turns hash), one new chunk per turn, until ``max`` chunks
# are read or nothing is left: a tenant's many jobs get no more turns than another tenant's one. Atomic, so a job
# that finishes meanwhile (its stream deleted) is never read half-way.
# KEYS: active, turns, then (job, work) of each job of the active set as the caller read it.
# ARGV: group, consumer, max chunks, tenant cursor, strict ('1': a job active since the caller's read makes the
# answer nil, nothing read), then the ids of the jobs read. Returns {next cursor, {job id, entry id, indices}...}.
READ_ROUND = (
    _ACTIVE_JOBS_FUNCTION
    + """
local active = active_jobs(3, 6, ARGV[5] == '1')
if not active then return false end
local tenants, jobs_of = {}, {}
for _, job in ipairs(active) do
  local fields = redis.call('HMGET', KEYS[job.k], 'tenant', 'priority')
  local tenant = fields[1] or ''
  if not jobs_of[tenant] then
    jobs_of[tenant] = {}
    table.insert(tenants, tenant)
  end
  table.insert(jobs_of[tenant], {id = job.id, k = job.k, priority = tonumber(fields[2] or '0')})
end
local out = {}
local n = #tenants
if n == 0 then return {0, out} end
local exhausted = {}

local function take(tenant)
  while true do
    local top, turn = nil, {}
    for _, job in ipairs(jobs_of[tenant]) do
      if not exhausted[job.id] then
        if top == nil or job.priority > top then top, turn = job.priority, {job}
        elseif job.priority == top then table.insert(turn, job) end
      end
    end
    if #turn == 0 then return nil end
    local job = turn[(redis.call('HINCRBY', KEYS[2], tenant, 1) - 1) % #turn + 1]
    local work = KEYS[job.k + 1]
    local got = false
    if redis.call('EXISTS', work) == 1 then
      got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', work, '>')
    end
    if got then
      local entry = got[1][2][1]
      return {job.id, entry[1], entry[2][2]}
    end
    exhausted[job.id] = true
  end
end

local limit = tonumber(ARGV[3])
local cursor = tonumber(ARGV[4]) % n
local done_tenants, left = {}, n
while #out < limit and left > 0 do
  local tenant = tenants[cursor + 1]
  cursor = (cursor + 1) % n
  if not done_tenants[tenant] then
    local chunk = take(tenant)
    if chunk then
      table.insert(out, chunk)
    else
      done_tenants[tenant] = true
      left = left - 1
    end
  end
end
redis.call('EXPIRE', KEYS[2], 86400)
return {cursor, out}
"""
)


def read_round_args(
    model: str, job_ids: list[str], consumer: str, max_chunks: int, cursor: int, *, strict: bool
) -> tuple[list[str], list[str | int]]:
    """(KEYS, ARGV) of READ_ROUND over ``job_ids``, the model's active set as the caller read it."""
    keys = [redis_keys.active(model), redis_keys.turns(model), *_active_call(job_ids, redis_keys.job_work)]
    return keys, [redis_keys.GROUP, consumer, max_chunks, cursor, int(strict), *job_ids]


# How many jobs of a model have work queued, and how many of their images are not made yet (for /metrics).
# KEYS: active, then (job, images) of each job of the active set as the caller read it. ARGV: the ids of those jobs.
# Returns {jobs, images}; a job active since the caller's read is counted by the next one.
QUEUED_IMAGES = (
    _ACTIVE_JOBS_FUNCTION
    + """
local jobs = active_jobs(2, 1, false)
local images = 0
for _, job in ipairs(jobs) do
  local total = tonumber(redis.call('HGET', KEYS[job.k], 'total') or '0')
  images = images + total - redis.call('HLEN', KEYS[job.k + 1])
end
return {#jobs, images}
"""
)


def queued_images_args(model: str, job_ids: list[str]) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) of QUEUED_IMAGES over ``job_ids``, the model's active set as the caller read it."""
    return [redis_keys.active(model), *_active_call(job_ids, redis_keys.job_images)], job_ids


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def new_job_fields(job_id: str, tenant: str, request: JobRequest, created_at: str) -> dict[str, str]:
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
    }


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
