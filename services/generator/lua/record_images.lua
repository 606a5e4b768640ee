-- Uses end_job_functions.lua, which store.py puts before this code.
-- Record finished images of one job; finish the job when the last one is in.
-- KEYS: job_keys. ARGV: job id, now, ttl, end channel, progress channel, then (index, record, origin): origin '1'
-- for an image served from the cache, '0' for one generated, 'r' for one drawn again after the safety checker.
-- Returns {outcome, done, total}, the outcome a RecordOutcome.
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
    if ARGV[i + 2] == 'r' then redis.call('HINCRBY', KEYS[1], 'replaced', 1) end
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
