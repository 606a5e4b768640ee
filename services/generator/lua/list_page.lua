#!lua flags=no-writes
-- One page of a scope's set, newest first, after the cursor: read-only, so listings work while Redis is full.
-- KEYS: the set (a scope's ``all`` or one state's). ARGV: count, then the cursor's score and job id (none: '').
-- Jobs of the cursor's own score come after it when their id is lower (Redis orders equal scores by member).
-- Returns {job id, score, ...}.
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
