-- The model's active jobs (ZRANGE of KEYS[1]) in their order, as {id, k}: KEYS[k] and KEYS[k + 1] are the job's
-- keys. The caller read the set first: ARGV[from], ARGV[from + 1], ... are the ids it saw, with their key pairs in
-- KEYS from KEYS[base] on. A job it did not see (active since) is left out; with ``strict`` it makes the answer nil.
local function active_jobs(base, from, strict)
  local slot = {}
  for i = from, #ARGV do slot[ARGV[i]] = base + 2 * (i - from) end
  local jobs = {}
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if slot[id] then table.insert(jobs, {id = id, k = slot[id]})
    elseif strict then return nil end
  end
  return jobs
end
