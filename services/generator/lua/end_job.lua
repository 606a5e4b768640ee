#!lua flags=allow-oom
-- Uses end_job_functions.lua, which store.py puts before this code.
-- End a live job early (cancelled or failed): its remaining work is deleted so no worker reads it again.
-- Allowed over maxmemory (it frees the job's work), so a cancel works while Redis is full.
-- KEYS: job_keys. ARGV: job id, new state, error, now, ttl, channel.
-- Returns the state the job has afterwards.
local foreign = foreign_record()
if foreign then return foreign end
local state = redis.call('HGET', KEYS[1], 'status')
if not state then return false end
if state ~= 'queued' and state ~= 'running' then return state end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
end_job(ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6])
return ARGV[2]
