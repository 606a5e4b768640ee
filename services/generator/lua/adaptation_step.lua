-- Record an adaptation's progress while it is live: its state becomes running, its step the one given (after a
-- takeover, the checkpoint's, which may be less than the step its dead worker had reached).
-- KEYS: the record. ARGV: step.
-- Returns the state the job has afterwards (false: no such job): anything but running tells its worker to stop.
local state = redis.call('HGET', KEYS[1], 'status')
if not state then return false end
if state ~= 'queued' and state ~= 'running' then return state end
redis.call('HSET', KEYS[1], 'status', 'running', 'step', ARGV[1])
return 'running'
