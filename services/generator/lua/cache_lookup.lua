-- Look up images by content key, the second of two steps: the caller has read the cache entries (MGET), and this
-- keeps those that still name the PNG read and whose bytes are still stored, refreshing both TTLs (least recently
-- used is what expires); an entry evicted or rewritten meanwhile is a miss. Two round trips for a whole job.
-- KEYS: (cache key, PNG key) of each entry that named a PNG. ARGV: ttl, then the SHA-256 each entry named.
-- Returns, for each pair, the SHA-256, or false for a miss.
local found = {}
for i = 1, #ARGV - 1 do
  local cache, png, sha = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i + 1]
  local hit = redis.call('GET', cache) == sha and redis.call('EXPIRE', png, ARGV[1]) == 1
  if hit then redis.call('EXPIRE', cache, ARGV[1]) end
  table.insert(found, hit and sha)
end
return found
