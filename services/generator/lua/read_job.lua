#!lua flags=no-writes
-- Read a job and, unless ARGV[1] is '0', its image records, in one step that Redis allows over maxmemory (a
-- MULTI is refused there). KEYS: job, images. Returns {job fields (flat), images done, records (flat)}.
local records = {}
if ARGV[1] ~= '0' then records = redis.call('HGETALL', KEYS[2]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('HLEN', KEYS[2]), records}
