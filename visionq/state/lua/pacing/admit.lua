-- KEYS[1] = the model's rotation of tenants (pacing)
-- KEYS[2] = the model's counter of turns served (pacing)
-- KEYS[3] = since when each waiting job has been ready (pacing)
-- KEYS[4] = the model's waiting tickets (pacing)
-- KEYS[5] = the model's rotation of tenants' batch lines (pacing)
-- KEYS[6] = the model's slots for calls in flight (pacing)
-- KEYS[7] = the model's requests in the moving window, by when each was sent (pacing)
-- KEYS[8] = the batch lane's theoretical arrival time (pacing)
-- KEYS[9] = until when the model is paused after a 429 (pacing), read only
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the prefix of the model's tenant queues (keys.pace(model, keys.PACE_QUEUE))
-- ARGV[3] = how many tenants to look through
-- ARGV[4] = the ticket
-- ARGV[5] = the prefix of the model's tenants' batch queues
-- ARGV[6] = the slot id (also the request's member in the window)
-- ARGV[7] = the slot's expiry
-- ARGV[8] = how many slots there are
-- ARGV[9] = requests per window
-- ARGV[10] = the window, in seconds
-- ARGV[11] = the batch lane's interval between requests, in seconds
-- ARGV[12] = how far ahead of its interval the batch lane may run, in seconds
--
-- One step for a turn: room in the budget and the next job together, so that a job is
-- only ever taken when it can be sent at once. Returns the taken job {id, ready since,
-- lane}, or {'wait', seconds, limit, lane} when a job is due but the budget has no room
-- for it, or nil when no job is due (the ticket's turn ends).
--
-- Interactive jobs first: a batch line is taken only when no interactive job is due, and
-- batch lines too take turns by tenant. Interactive jobs may spend the moving window in a
-- burst. Batch lines are spread evenly (one per interval, a generic cell rate), so the
-- window never fills in one burst that an arriving interactive job would wait out: its
-- next request frees within one interval. And a batch line leaves one slot for calls in
-- flight free (of two or more), so a batch never holds every slot.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[10])

local function head_of(rotation, prefix, take)
  local tenants = redis.call('ZRANGE', rotation, 0, tonumber(ARGV[3]) - 1)
  for _, tenant in ipairs(tenants) do
    local queue = prefix .. tenant
    local head = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', 0, 1)
    if #head == 1 then
      if not take then return head[1] end
      redis.call('ZREM', queue, head[1])
      redis.call('ZREM', KEYS[4], ARGV[4])
      if redis.call('EXISTS', queue) == 0 then
        redis.call('ZREM', rotation, tenant)
      else
        redis.call('ZADD', rotation, redis.call('INCR', KEYS[2]), tenant)
      end
      local since = redis.call('HGET', KEYS[3], head[1]) or ARGV[1]
      redis.call('HDEL', KEYS[3], head[1])
      return head[1], since
    elseif redis.call('EXISTS', queue) == 0 then
      redis.call('ZREM', rotation, tenant)
    end
  end
  return nil
end

local function wait(seconds, limit, lane)
  return {'wait', tostring(math.max(0, seconds)), limit, lane}
end

local paused = tonumber(redis.call('GET', KEYS[9]) or '0') - now
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[6])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - window)
local sent = redis.call('ZCARD', KEYS[7])
local per_window = tonumber(ARGV[9])

-- What holds a call now, if anything: the pause, the slots, or the window.
local function held(slots)
  if paused > 0 then return paused, 'paused' end
  if in_flight >= slots then return 0.05, 'concurrency' end
  if sent >= per_window then
    local oldest = redis.call('ZRANGE', KEYS[7], sent - per_window, sent - per_window, 'WITHSCORES')
    return tonumber(oldest[2]) + window - now, 'rpm'
  end
  return nil
end

local function admit(job, since, lane)
  redis.call('ZADD', KEYS[6], ARGV[7], ARGV[6])
  redis.call('ZADD', KEYS[7], now, ARGV[6])
  redis.call('EXPIRE', KEYS[7], math.ceil(window) + 1)
  return {job, since, lane}
end

local slots = tonumber(ARGV[8])
local seconds, limit = held(slots)
if seconds == nil then
  local job, since = head_of(KEYS[1], ARGV[2], true)
  if job then return admit(job, since, 'interactive') end
elseif head_of(KEYS[1], ARGV[2], false) then
  return wait(seconds, limit, 'interactive')
end

local batch_slots = slots
if slots > 1 then batch_slots = slots - 1 end
seconds, limit = held(batch_slots)
local interval, ahead = tonumber(ARGV[11]), tonumber(ARGV[12])
local tat = math.max(tonumber(redis.call('GET', KEYS[8]) or '0'), now)
if seconds == nil and tat - now > ahead then seconds, limit = tat - ahead - now, 'rpm' end
if seconds ~= nil then
  if head_of(KEYS[5], ARGV[5], false) then return wait(seconds, limit, 'batch') end
  return nil
end
local job, since = head_of(KEYS[5], ARGV[5], true)
if not job then return nil end
redis.call('SET', KEYS[8], tostring(tat + interval), 'PX', math.ceil((tat + interval - now + ahead) * 1000) + 1000)
return admit(job, since, 'batch')
