-- KEYS[1] = the job's hash (jobs)
-- KEYS[2] = the done channel (jobs)
-- KEYS[3] = the webhook outbox (outbox)
-- KEYS[4] = the lease index (leases)
-- KEYS[5] = the expiry index (blobs)
-- ARGV[1] = the statuses allowed now, space separated
-- ARGV[2] = the new status, or "" to keep it
-- ARGV[3] = the TTL to set (seconds), or 0
-- ARGV[4] = the job id when this finishes the job, else ""
-- ARGV[5] = now (Unix seconds)
-- ARGV[6] = a field that must be absent, or ""
-- ARGV[7] = the job id
-- ARGV[8..] = field/value pairs to set
--
-- The one guarded step of a job's status: compare and set. Writes the hash, and with a
-- TTL the expiry index. A finishing step also publishes the id on the done channel (for
-- waiters), takes the job out of the lease index, and, when the job has a webhook, puts
-- it in the outbox, all in the same step, so the event cannot be lost between the two.
-- Returns 1 when applied, {0, current status} when refused, nil when the job is missing.
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return nil end
if not string.find(' ' .. ARGV[1] .. ' ', ' ' .. cur .. ' ', 1, true) then return {0, cur} end
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[6]) == 1 then return {0, cur} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
if tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[5]) + tonumber(ARGV[3]), ARGV[7])
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  local webhook = redis.call('HGET', KEYS[1], 'webhook')
  if webhook and webhook ~= 'null' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4]) end
end
return 1
