-- Shared by the scripts that end a job: the end state, no more work, no longer counted, expiry, a wake-up.
-- A job that asked for a webhook gets its delivery queued in the same step, so no end goes unannounced.
-- KEYS: job, images, active, tenant_active, work, order, webhooks, and the job's idempotency record (the job key
-- again when it has none), which the scripts check against the job's field before any write; then index_keys.
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
