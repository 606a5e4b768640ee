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
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum

from gift_common import redis_keys
from gift_common.schemas import ImageInfo, JobRequest, JobState, JobStatus

LIVE_STATES = (JobState.queued.value, JobState.running.value)

# Shared by the scripts that end a job: the end state, no more work, no longer counted, expiry, a wake-up.
# A job that asked for a webhook gets its delivery queued in the same step, so no end goes unannounced.
# KEYS: job, images, active, tenant_active, work, order, webhooks.
_END_JOB_FUNCTION = """
local function end_job(job_id, state, now, ttl, channel)
  redis.call('HSET', KEYS[1], 'status', state, 'finished_at', now)
  redis.call('ZREM', KEYS[3], job_id)
  redis.call('SREM', KEYS[4], job_id)
  redis.call('DEL', KEYS[5])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[6], ttl)
  local idempotency = redis.call('HGET', KEYS[1], 'idempotency_key')
  if idempotency then redis.call('EXPIRE', idempotency, ttl) end
  redis.call('PUBLISH', channel, job_id)
  if redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
    redis.call('XADD', KEYS[7], '*', 'job', job_id, 'attempt', 1)
  end
end
"""

# Record finished images of one job; finish the job when the last one is in.
# KEYS: job, images, active, tenant_active, work, order, webhooks.
# ARGV: job id, now, ttl, end channel, progress channel, then (index, record, cached).
# Returns {outcome, done, total}, the outcome a RecordOutcome.
RECORD_IMAGES = (
    _END_JOB_FUNCTION
    + """
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
# KEYS: job, images, active, tenant_active, work, order, webhooks. ARGV: job id, new state, error, now, ttl, channel.
# Returns the state the job has afterwards.
END_JOB = (
    "#!lua flags=allow-oom\n"
    + _END_JOB_FUNCTION
    + """
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
# order, webhooks.
# ARGV: job id, the tenant's limit, ttl, creation score, then JSON: fields {name: value}, records {index: record},
# chunks [encoded indices], counters {stats field: increment}, and the consumer group, then the request's
# fingerprint ('' without a key) and the job key prefix.
# Returns the tenant's unfinished jobs before this one, and 1 when accepted or 0 when refused for the limit;
# or 0, 2, the first job's id and the fingerprint of its request when the idempotency key names a job that exists.
ADMIT_JOB = """
local keyed = KEYS[7] ~= KEYS[1]
if keyed then
  local first = redis.call('HMGET', KEYS[7], 'job', 'fingerprint')
  if first[1] and redis.call('EXISTS', ARGV[11] .. first[1]) == 1 then return {0, 2, first[1], first[2]} end
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
  return {queued, 1}
end
redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[9], '0', 'MKSTREAM')
for _, indices in ipairs(chunks) do redis.call('XADD', KEYS[3], '*', 'indices', indices) end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return {queued, 1}
"""

# Read a job and, unless ARGV[1] is '0', its image records, in one step that Redis allows over maxmemory (a
# MULTI is refused there). KEYS: job, images. Returns {job fields (flat), images done, records (flat)}.
READ_JOB = """#!lua flags=no-writes
local records = {}
if ARGV[1] ~= '0' then records = redis.call('HGETALL', KEYS[2]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('HLEN', KEYS[2]), records}
"""

# Look up images by content key: the SHA-256 of each one's PNG, or false when it was never made or its bytes were
# evicted. Hits have their TTLs refreshed (least recently used is what expires). One round trip for a whole job.
# KEYS: cache keys. ARGV: PNG key prefix, ttl.
CACHE_LOOKUP = """
local found = {}
for i, key in ipairs(KEYS) do
  local sha = redis.call('GET', key)
  if sha and redis.call('EXPIRE', ARGV[1] .. sha, ARGV[2]) == 1 then
    redis.call('EXPIRE', key, ARGV[2])
    found[i] = sha
  else
    found[i] = false
  end
end
return found
"""
KEYS_PER_LOOKUP = 512  # a lookup of more keys is split, so one script never holds Redis for long


def lookup_args(content_keys: list[str], ttl: int, owner: str | None = None) -> list[tuple[list[str], list[str | int]]]:
    """(KEYS, ARGV) of the CACHE_LOOKUP calls for ``content_keys`` in ``owner``'s cache scope, in order."""
    keys = [redis_keys.cache(key, owner) for key in content_keys]
    return [
        (keys[start : start + KEYS_PER_LOOKUP], [redis_keys.png("", owner), ttl])
        for start in range(0, len(keys), KEYS_PER_LOOKUP)
    ]


# Passes over a model's active jobs that take turns between tenants first, then between a tenant's jobs of the
# highest priority (rotated by a per-tenant counter in the turns hash), one new chunk per turn, until ``max`` chunks
# are read or nothing is left: a tenant's many jobs get no more turns than another tenant's one. Atomic, so a job
# that finishes meanwhile (its stream deleted) is never read half-way.
# KEYS: active, turns. ARGV: key prefix, group, consumer, max chunks, tenant cursor.
# Returns {next cursor, {job id, entry id, indices}...}.
READ_ROUND = """
local tenants, jobs_of = {}, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HMGET', ARGV[1] .. ':job:' .. id, 'tenant', 'priority')
  local tenant = fields[1] or ''
  if not jobs_of[tenant] then
    jobs_of[tenant] = {}
    table.insert(tenants, tenant)
  end
  table.insert(jobs_of[tenant], {id = id, priority = tonumber(fields[2] or '0')})
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
        if top == nil or job.priority > top then top, turn = job.priority, {job.id}
        elseif job.priority == top then table.insert(turn, job.id) end
      end
    end
    if #turn == 0 then return nil end
    local id = turn[(redis.call('HINCRBY', KEYS[2], tenant, 1) - 1) % #turn + 1]
    local work = ARGV[1] .. ':job:' .. id .. ':work'
    local got = false
    if redis.call('EXISTS', work) == 1 then
      got = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', 1, 'STREAMS', work, '>')
    end
    if got then
      local entry = got[1][2][1]
      return {id, entry[1], entry[2][2]}
    end
    exhausted[id] = true
  end
end

local limit = tonumber(ARGV[4])
local cursor = tonumber(ARGV[5]) % n
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
        "request": request.model_dump_json(),
        **({"callback_url": request.callback_url} if request.callback_url else {}),
    }


def image_record(index: int, prompt: str, seed: int, sha256: str) -> str:
    return json.dumps({"index": index, "prompt": prompt, "seed": seed, "sha256": sha256})


def image_info(record: dict) -> ImageInfo:
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
        images=images,
    )


def job_keys(job_id: str, model: str, tenant: str) -> list[str]:
    """The KEYS of RECORD_IMAGES and END_JOB, in their order."""
    return [
        redis_keys.job(job_id),
        redis_keys.job_images(job_id),
        redis_keys.active(model),
        redis_keys.tenant_active(tenant),
        redis_keys.job_work(job_id),
        redis_keys.job_order(job_id),
        redis_keys.WEBHOOKS,
    ]


def chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def encode_indices(indices: list[int]) -> str:
    return ",".join(map(str, indices))


def decode_indices(text: str | bytes) -> list[int]:
    text = text.decode() if isinstance(text, bytes) else text
    return [int(i) for i in text.split(",") if i]
