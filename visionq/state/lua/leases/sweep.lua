-- KEYS[1] = the lease index (leases)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the lease (seconds)
-- ARGV[3] = how many jobs at most
-- ARGV[4] = the queued grace (seconds)
-- ARGV[5] = keys.JOB_PREFIX
-- ARGV[6] = keys.PACE_PREFIX
-- ARGV[7] = keys.PACE_QUEUE
-- ARGV[8] = keys.PACE_BATCH_QUEUE
--
-- For each job due a look: a live lease moves the look to its end; a job waiting for
-- its turn in the pacer (read from the pacer's queue of its model and tenant) is left to
-- the pacer's tickets (the sweeper replaces those a dead worker held) and looked at
-- again after a grace; an expired lease is returned with its stage, model, tenant and lane,
-- and looked at again a lease (or a grace) later. Writes the lease index and the
-- `received_until` lease field.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(due) do
  local key = ARGV[5] .. id
  local job = redis.call(
    'HMGET', key, 'status', 'lease_until', 'received_until', 'model', 'tenant', 'lane'
  )
  local status = job[1]
  local held = tonumber(job[2] or '0')
  local received = tonumber(job[3] or '0')
  local prepared = redis.call('HEXISTS', key, 'prepared') == 1
  if not status or (status ~= 'queued' and status ~= 'running') then
    redis.call('ZREM', KEYS[1], id)
  elseif held > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], held, id)
  elseif status == 'queued' and received > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], received, id)
  elseif prepared and (redis.call('ZSCORE', ARGV[6] .. job[4] .. ARGV[7] .. job[5], id)
      or redis.call('ZSCORE', ARGV[6] .. job[4] .. ARGV[8] .. job[5], id)) then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), id)
  else
    redis.call('HDEL', key, 'received_until')
    local stage = 'prepare'
    if prepared then stage = 'upstream' end
    local wait = tonumber(ARGV[2])
    if status == 'queued' then wait = tonumber(ARGV[4]) end
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + wait, id)
    table.insert(out, id)
    table.insert(out, stage)
    table.insert(out, job[4])
    table.insert(out, job[5])
    table.insert(out, job[6] or 'interactive')
  end
end
return out
