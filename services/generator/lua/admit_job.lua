-- Accept a job: the tenant's limit check and every write of the job are one atomic step, so a burst of submissions
-- cannot pass the limit, and a refused write (Redis full) leaves nothing behind. A submission with an idempotency
-- key whose job still exists is not a new one: the key (written with the job, expiring with it) names that job.
-- KEYS: job, images, work, active, tenant_active, stats, idempotency key (or the job key again when none is sent),
-- order, webhooks, the key of the job the idempotency record named when the caller read it (else the job key), then
-- job_index.index_keys.
-- ARGV: job id, the tenant's limit, ttl, creation score, then JSON: fields {name: value}, records {index: record},
-- chunks [encoded indices], counters {stats field: increment}, and the consumer group, then the request's
-- fingerprint ('' without a key) and the id of the job the record named when read ('' for none).
-- Returns the tenant's unfinished jobs before this one, and an AdmitOutcome: accepted, or refused for the limit;
-- replay, with the first job's id and the fingerprint of its request, when the idempotency key names a job that
-- exists; stale, nothing written, when the record names another job than it did when read (read it again).
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
