-- KEYS[1] = the job's hash (jobs)
-- KEYS[2] = the done channel (jobs)
-- KEYS[3] = the webhook outbox (outbox)
-- KEYS[4] = the lease index (leases)
-- KEYS[5] = the expiry index (blobs)
-- KEYS[6] = the index of jobs by deadline (jobs)
-- ARGV[1] = the statuses allowed now, space separated
-- ARGV[2] = the new status, or "" to keep it
-- ARGV[3] = the TTL to set (seconds), or 0
-- ARGV[4] = the job id when this finishes the job, else ""
-- ARGV[5] = now (Unix seconds)
-- ARGV[6] = a field that must be absent, or "" ("lease_until": no lease may be held)
-- ARGV[7] = the job id
-- ARGV[8] = keys.BATCH_PREFIX
-- ARGV[9] = keys.BATCH_OPEN_SUFFIX
-- ARGV[10] = the batch counter a finish adds to (completed, failed, canceled, expired)
-- ARGV[11] = the prompt tokens a success used
-- ARGV[12] = the completion tokens a success used
-- ARGV[13] = what a finish adds to its tenant's usage, as JSON (below), or ""
-- ARGV[14..] = field/value pairs to set
--
-- The usage: {"p": keys.USAGE_PREFIX, "t": keys.USAGE_TENANTS, "q": keys.QUOTA_PREFIX,
-- "h": the hour (YYYYMMDDHH), "d": the day (YYYYMMDD), "m": the month (YYYYMM), "ttl":
-- seconds the hour's counters are kept, "a": the account, "c": {counter: n}, "tokens":
-- what the quotas count}. It is added in the step that finishes the job, so once.
--
-- The one guarded step of a job's status: compare and set. Writes the hash, and with a
-- TTL the expiry index. A finishing step also publishes the id on the done channel (for
-- waiters), takes the job out of the lease index, and, when the job has a webhook, puts
-- it in the outbox, all in the same step, so the event cannot be lost between the two.
-- A batch line's finish is counted on its batch (batches) in the same step too; when the
-- batch then has room for more lines, or none left running, it is flagged `wake`.
-- Returns 1 when applied ({2, batch id} when the caller should wake that batch), {0,
-- current status} when refused, nil when the job is missing.
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return nil end
if not string.find(' ' .. ARGV[1] .. ' ', ' ' .. cur .. ' ', 1, true) then return {0, cur} end
if ARGV[6] == 'lease_until' then
  -- Only a job nobody works on now: waiting for a worker, or for the upstream budget.
  local held = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if held > tonumber(ARGV[5]) then return {0, cur} end
elseif ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[6]) == 1 then
  return {0, cur}
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
if #ARGV > 13 then redis.call('HSET', KEYS[1], unpack(ARGV, 14)) end
if tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[5]) + tonumber(ARGV[3]), ARGV[7])
end
if ARGV[4] == '' then return 1 end
redis.call('PUBLISH', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('ZREM', KEYS[6], ARGV[4])
local webhook = redis.call('HGET', KEYS[1], 'webhook')
if webhook and webhook ~= 'null' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4]) end
local u = nil
if ARGV[13] ~= '' then
  u = cjson.decode(ARGV[13])
  local tenant = redis.call('HGET', KEYS[1], 'tenant')
  local prefix = redis.call('HGET', KEYS[1], 'model') .. '|' .. u.a .. '|'
  local hour = u.p .. tenant .. ':' .. u.h
  for name, n in pairs(u.c) do redis.call('HINCRBY', hour, prefix .. name, n) end
  redis.call('EXPIRE', hour, u.ttl)
  redis.call('SADD', u.t, tenant)
  if u.tokens > 0 then
    local day, month = u.q .. tenant .. ':' .. u.d, u.q .. tenant .. ':' .. u.m
    redis.call('INCRBY', day, u.tokens)
    redis.call('EXPIRE', day, 3 * 86400)
    redis.call('INCRBY', month, u.tokens)
    redis.call('EXPIRE', month, 40 * 86400)
  end
end
local batch = redis.call('HGET', KEYS[1], 'batch_id')
if not batch then return 1 end
local bkey = ARGV[8] .. batch
-- Its batch counts it only while the line is open: not once the batch has ended.
if redis.call('SREM', bkey .. ARGV[9], ARGV[4]) == 0 then return 1 end
redis.call('HINCRBY', bkey, ARGV[10], 1)
local running = redis.call('HINCRBY', bkey, 'in_flight', -1)
if tonumber(ARGV[11]) > 0 then redis.call('HINCRBY', bkey, 'prompt_tokens', ARGV[11]) end
if tonumber(ARGV[12]) > 0 then redis.call('HINCRBY', bkey, 'completion_tokens', ARGV[12]) end
if u and u.c.cost_nanos then redis.call('HINCRBY', bkey, 'cost_nanos', u.c.cost_nanos) end
local b = redis.call('HMGET', bkey, 'status', 'admitted', 'total', 'window', 'wake')
if b[5] then return 1 end
local more = b[1] == 'in_progress' and tonumber(b[2]) < tonumber(b[3])
  and running * 2 <= tonumber(b[4])
if more or running <= 0 then
  redis.call('HSET', bkey, 'wake', 1)
  return {2, batch}
end
return 1
