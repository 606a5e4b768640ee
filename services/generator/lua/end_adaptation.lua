#!lua flags=allow-oom
-- End a live adaptation job (succeeded, failed or cancelled); its archive and checkpoint go, its record expires.
-- Allowed over maxmemory (it frees the archive), so a cancel works while Redis is full.
-- KEYS: the record, the archive, the checkpoint. ARGV: new state, now (unix seconds), ttl, channel, id,
-- then field, value pairs to set (the adapter, the error).
-- Returns the state the job has afterwards (false: no such job).
local state = redis.call('HGET', KEYS[1], 'status')
if not state then return false end
if state ~= 'queued' and state ~= 'running' then return state end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', ARGV[2])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return ARGV[1]
