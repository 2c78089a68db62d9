-- KEYS[1] = the job's hash (jobs; its lease fields are leases')
-- KEYS[2] = the lease index (leases)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the lease's end
-- ARGV[3] = the job id
-- ARGV[4] = the stage: "prepare" or "upstream"
--
-- Takes the job for a stage when nobody live holds it; returns the stage's attempt
-- count and the job's hash as it now is (the taker's next read, saved), or nil: leave it
-- alone. Writes the lease fields (lease_until, and the stage's attempt counter) and the
-- lease index; the first prepare of a queued job also moves its status to running and
-- sets started_at, the one status change outside jobs' transition, made here so that
-- starting and holding the job are one step.
local status = redis.call('HGET', KEYS[1], 'status')
local prepared = redis.call('HEXISTS', KEYS[1], 'prepared') == 1
if ARGV[4] == 'prepare' then
  if status == 'queued' then
    redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
  elseif status ~= 'running' or prepared then
    return nil
  end
elseif status ~= 'running' or not prepared then
  return nil
end
local held = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
if held > tonumber(ARGV[1]) then return nil end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
local counter = 'prepare_attempts'
if ARGV[4] == 'upstream' then counter = 'attempts' end
local attempt = redis.call('HINCRBY', KEYS[1], counter, 1)
return {attempt, redis.call('HGETALL', KEYS[1])}
