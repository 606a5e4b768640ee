-- The listings' index (job_index.py), shared by the scripts that change a job. Each function takes ``base``: its
-- KEYS[base .. base + 13] are job_index.index_keys (the tenant's sets, then the deployment's). ``ttl`` is the job
-- TTL; the times are Redis's own clock.
local PRUNE = 32  -- expired jobs a write drops from each scope: more than a job's writes can add (two at least)
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
