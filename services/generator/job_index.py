"""The listings' index in Redis: each tenant's jobs, and the deployment's, newest first, by state.

A listing must cost its page, not the number of jobs kept (a million is allowed for), so jobs are indexed in
sorted sets scored by creation time (integer microseconds), per scope (a tenant's, and the deployment's for
admins): ``all``, one per state, and ``ended`` (a finished job -> when its hash expires). The job model's scripts
(store.py) keep them in the same atomic step as the job's own writes:

- ADMIT_JOB adds the job (``index_add``); RECORD_IMAGES moves a queued job to ``running`` and ``end_job`` to its
  end state (``index_move``), which also notes when the job's hash will expire;
- every such write first drops up to PRUNE_PER_WRITE jobs whose hash has expired (``index_tidy``), so the index
  holds what the jobs' TTLs hold, plus what expired since the scope's last write; a scope with nothing live
  expires as a whole, a job TTL after its last write, by when every job it names has expired too.

A listing skips a job whose hash is gone (expired since the last write). Jobs submitted before the index existed
are not in it; they expire within a job TTL.
"""

from __future__ import annotations

from gift_common import redis_keys
from gift_common.schemas import JobState

PARTS = ("all", *(state.value for state in JobState), "ended")  # one scope's sets, in KEYS order
PRUNE_PER_WRITE = 32  # expired jobs a write drops from each scope: more than a job's writes can add (two at least)

# Lua shared by the scripts that change a job. Each takes ``base``: its KEYS[base .. base + 13] are index_keys'
# (the tenant's sets, then the deployment's). ``ttl`` is the job TTL; the times are Redis's own clock.
INDEX_FUNCTION = """
local INDEX_PART = {queued = 1, running = 2, succeeded = 3, failed = 4, cancelled = 5}
local INDEX_TERMINAL = {succeeded = true, failed = true, cancelled = true}

local function index_now()
  local time = redis.call('TIME')
  return tonumber(time[1]) + tonumber(time[2]) / 1000000
end

local function index_tidy(base, ttl)
  local now = index_now()
  for _, b in ipairs({base, base + 7}) do
    local gone = redis.call('ZRANGE', KEYS[b + 6], '-inf', now, 'BYSCORE', 'LIMIT', 0, PRUNE)
    if #gone > 0 then
      for part = 0, 6 do redis.call('ZREM', KEYS[b + part], unpack(gone)) end
    end
    if redis.call('ZCARD', KEYS[b + 1]) + redis.call('ZCARD', KEYS[b + 2]) == 0 then
      for part = 0, 6 do redis.call('EXPIRE', KEYS[b + part], ttl) end
    elseif redis.call('TTL', KEYS[b]) ~= -1 then  -- the parts expire and persist together: one TTL tells
      for part = 0, 6 do redis.call('PERSIST', KEYS[b + part]) end
    end
  end
end

local function index_ended(b, job_id, state, ttl)
  if INDEX_TERMINAL[state] then redis.call('ZADD', KEYS[b + 6], index_now() + tonumber(ttl), job_id) end
end

local function index_add(base, job_id, created, state, ttl)
  local score = math.floor(tonumber(created) * 1000000)
  for _, b in ipairs({base, base + 7}) do
    redis.call('ZADD', KEYS[b], score, job_id)
    redis.call('ZADD', KEYS[b + INDEX_PART[state]], score, job_id)
    index_ended(b, job_id, state, ttl)
  end
  index_tidy(base, ttl)
end

local function index_move(base, job_id, state, ttl)
  for _, b in ipairs({base, base + 7}) do
    local score = redis.call('ZSCORE', KEYS[b], job_id)
    if score then
      for part = 1, 5 do redis.call('ZREM', KEYS[b + part], job_id) end
      redis.call('ZADD', KEYS[b + INDEX_PART[state]], score, job_id)
      index_ended(b, job_id, state, ttl)
    end
  end
  index_tidy(base, ttl)
end
""".replace("PRUNE", str(PRUNE_PER_WRITE))

# One page of a scope's set, newest first, after the cursor: read-only, so listings work while Redis is full.
# KEYS: the set (a scope's ``all`` or one state's). ARGV: count, then the cursor's score and job id (none: '').
# Jobs of the cursor's own score come after it when their id is lower (Redis orders equal scores by member).
# Returns {job id, score, ...}.
LIST_PAGE = """#!lua flags=no-writes
local count = tonumber(ARGV[1])
if ARGV[2] == '' then
  return redis.call('ZRANGE', KEYS[1], '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, count, 'WITHSCORES')
end
local out = {}
local ties = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[2], 'BYSCORE', 'REV')
for _, id in ipairs(ties) do
  if #out >= 2 * count then return out end
  if id < ARGV[3] then
    table.insert(out, id)
    table.insert(out, ARGV[2])
  end
end
local rest = redis.call('ZRANGE', KEYS[1], '(' .. ARGV[2], '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, count - #out / 2,
  'WITHSCORES')
for _, value in ipairs(rest) do table.insert(out, value) end
return out
"""


def index_keys(tenant: str) -> list[str]:
    """The index's KEYS in every script that changes a job: the tenant's sets, then the deployment's."""
    return [redis_keys.job_index(tenant, part) for part in PARTS] + [redis_keys.job_index(None, part) for part in PARTS]
