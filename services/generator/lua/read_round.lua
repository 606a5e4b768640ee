-- Uses active_jobs_function.lua, which store.py puts before this code.
-- Passes over a model's active jobs that take turns between tenants first, then between a tenant's jobs of the
-- highest priority (rotated by a per-tenant counter in the turns hash), one new chunk per turn, until ``max`` chunks
-- are read or nothing is left: a tenant's many jobs get no more turns than another tenant's one. Atomic, so a job
-- that finishes meanwhile (its stream deleted) is never read half-way.
-- KEYS: active, turns, then (job, work) of each job of the active set as the caller read it.
-- ARGV: group, consumer, max chunks, tenant cursor, strict ('1': a job active since the caller's read makes the
-- answer nil, nothing read), then the ids of the jobs read. Returns {next cursor, {job id, entry id, indices}...}.
local active = active_jobs(3, 6, ARGV[5] == '1')
if not active then return false end
local tenants, jobs_of = {}, {}
for _, job in ipairs(active) do
  local fields = redis.call('HMGET', KEYS[job.k], 'tenant', 'priority')
  local tenant = fields[1] or ''
  if not jobs_of[tenant] then
    jobs_of[tenant] = {}
    table.insert(tenants, tenant)
  end
  table.insert(jobs_of[tenant], {id = job.id, k = job.k, priority = tonumber(fields[2] or '0')})
end
local out = {}
local n = #tenants
if n == 0 then return {0, out} end
local exhausted = {}

local function take(tenant)
  while true do
    local top, turn = nil, {}
    for _, job in ipairs(jobs_of[tenant]) do
      if not exhausted[job.id] then
        if top == nil or job.priority > top then top, turn = job.priority, {job}
        elseif job.priority == top then table.insert(turn, job) end
      end
    end
    if #turn == 0 then return nil end
    local job = turn[(redis.call('HINCRBY', KEYS[2], tenant, 1) - 1) % #turn + 1]
    local work = KEYS[job.k + 1]
    local got = false
    if redis.call('EXISTS', work) == 1 then
      got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', work, '>')
    end
    if got then
      local entry = got[1][2][1]
      return {job.id, entry[1], entry[2][2]}
    end
    exhausted[job.id] = true
  end
end

local limit = tonumber(ARGV[3])
local cursor = tonumber(ARGV[4]) % n
local done_tenants, left = {}, n
while #out < limit and left > 0 do
  local tenant = tenants[cursor + 1]
  cursor = (cursor + 1) % n
  if not done_tenants[tenant] then
    local chunk = take(tenant)
    if chunk then
      table.insert(out, chunk)
    else
      done_tenants[tenant] = true
      left = left - 1
    end
  end
end
redis.call('EXPIRE', KEYS[2], 86400)
return {cursor, out}
