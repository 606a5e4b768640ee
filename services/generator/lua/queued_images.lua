-- Uses active_jobs_function.lua, which store.py puts before this code.
-- How many jobs of a model have work queued, and how many of their images are not made yet (for /metrics).
-- KEYS: active, then (job, images) of each job of the active set as the caller read it. ARGV: the ids of those jobs.
-- Returns {jobs, images}; a job active since the caller's read is counted by the next one.
local jobs = active_jobs(2, 1, false)
local images = 0
for _, job in ipairs(jobs) do
  local total = tonumber(redis.call('HGET', KEYS[job.k], 'total') or '0')
  images = images + total - redis.call('HLEN', KEYS[job.k + 1])
end
return {#jobs, images}
