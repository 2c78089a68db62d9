-- KEYS[1] = the model's rotation of tenants (pacing)
-- KEYS[2] = the model's counter of turns served (pacing)
-- KEYS[3] = since when each waiting job has been ready (pacing)
-- KEYS[4] = the model's waiting tickets (pacing; joined to wait, left with a job)
-- KEYS[5] = the model's rotation of tenants' batch lines (pacing)
-- KEYS[6] = the account that served each tenant last (pacing)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the prefix of the model's tenant queues (keys.pace(model, keys.PACE_QUEUE))
-- ARGV[3] = how many tenants to look through
-- ARGV[4] = the ticket
-- ARGV[5] = the prefix of the model's tenants' batch queues
-- ARGV[6] = the slot id (also the request's member in the window)
-- ARGV[7] = the slot's expiry (and a waiting ticket's registration's)
-- ARGV[8] = the prefix of the model's keys per account (keys.pace_account(model, ""))
-- ARGV[9] = the prefix of the accounts' health hashes (keys.ACCOUNT_PREFIX)
-- ARGV[10] = the accounts as JSON (below)
-- ARGV[11] = how long a probe keeps its account to itself, in seconds
--
-- The accounts: {"a": [{"n": name, "c": slots, "pw": requests per window, "w": the window
-- in seconds, "pm": requests per minute, "m": the minute and its guard in seconds, "i":
-- the batch interval, "ah": how far ahead of it the batch lane may run}, ...], "s": [the
-- shared accounts' positions, 1-based], "p": {tenant: [its own accounts' positions]}}.
--
-- The minute is counted too, over a little more than a minute: the upstream counts
-- requests as they arrive, and two calls admitted a minute apart can arrive less than a
-- minute apart when the first one took longer on its way.
--
-- One step for a turn: room in an account's budget and the next job together, so that a
-- job is only ever taken when it can be sent at once. Returns the taken job {id, ready
-- since, lane, account, probe ('1' or '0')}; or {id, ready since, lane, '', 'refused',
-- reason, status} for a job that no account of its tenant can serve (every one is out of
-- rotation for 'auth' or 'funds', with the status it answered, or none is configured:
-- 'unserved'); or {'wait',
-- seconds, limit, lane} when jobs are due but their accounts have no room; or nil when
-- no job is due (the ticket's turn ends).
--
-- Interactive jobs first: a batch line is taken only when no interactive job can go now,
-- and batch lines too take turns by tenant. A tenant whose accounts are all full does not
-- hold up a tenant with room on another account. Interactive jobs may spend the moving
-- window in a burst; batch lines are spread evenly (one per interval per account, a
-- generic cell rate), so an arriving interactive job finds a request free within one
-- interval, and a batch line leaves one slot for calls in flight free (of two or more).
--
-- Of a tenant's accounts with room, the one that served it last goes first (its prompt
-- cache is per key), then the one with the most room. An account out of rotation (a
-- health hash with `until` in the future) is passed over; once `until` passes, one call
-- probes it, holding it for ARGV[11] seconds, and the worker clears the hash when the
-- probe succeeds.
local now = tonumber(ARGV[1])
local config = cjson.decode(ARGV[10])
local accounts = config.a

local looked = {}
local function look(i)
  if looked[i] then return looked[i] end
  local a = accounts[i]
  local p = ARGV[8] .. a.n
  local health = redis.call('HMGET', ARGV[9] .. a.n, 'until', 'confirmed', 'reason', 'status')
  redis.call('ZREMRANGEBYSCORE', p .. ':slots', '-inf', now)
  -- The requests of the guarded minute (`m`, longer than any window `w`) are kept.
  redis.call('ZREMRANGEBYSCORE', p .. ':requests', '-inf', now - a.m)
  local s = {
    a = a,
    p = p,
    benched = health[1] ~= false,
    out_until = tonumber(health[1] or '0'),
    confirmed = health[2] == '1',
    reason = health[3],
    status = health[4] or '0',
    in_flight = redis.call('ZCARD', p .. ':slots'),
    minute = redis.call('ZCARD', p .. ':requests'),
    sent = redis.call('ZCOUNT', p .. ':requests', '(' .. (now - a.w), '+inf'),
    paused = tonumber(redis.call('GET', p .. ':paused_until') or '0') - now,
    cap = tonumber(redis.call('GET', p .. ':cap') or a.c),
  }
  looked[i] = s
  return s
end

-- What holds a call on this account now, if anything, and for how long (an account out
-- of rotation is looked at again within a second: a probe may bring it back).
local function held(s, batch)
  if s.out_until > now then return math.min(s.out_until - now, 1), 'benched' end
  if s.paused > 0 then return s.paused, 'paused' end
  local slots = math.min(s.a.c, s.cap)
  if batch and slots > 1 then slots = slots - 1 end
  if s.in_flight >= slots then return 0.05, 'concurrency' end
  if s.sent >= s.a.pw then
    local at = s.minute - s.a.pw
    local oldest = redis.call('ZRANGE', s.p .. ':requests', at, at, 'WITHSCORES')
    return tonumber(oldest[2]) + s.a.w - now, 'rpm'
  end
  if s.minute >= s.a.pm then
    local at = s.minute - s.a.pm
    local oldest = redis.call('ZRANGE', s.p .. ':requests', at, at, 'WITHSCORES')
    return tonumber(oldest[2]) + s.a.m - now, 'rpm'
  end
  if batch then
    local tat = math.max(tonumber(redis.call('GET', s.p .. ':batch_due') or '0'), now)
    if tat - now > s.a.ah then return tat - s.a.ah - now, 'rpm' end
  end
  return nil
end

-- The account for the tenant's next job: {account}, or {nil, seconds, limit} to wait,
-- or {nil, nil, reason, status} when none of its accounts can serve it.
local function choose(tenant, batch)
  local eligible = config.p[tenant] or config.s
  if #eligible == 0 then return nil, nil, 'unserved' end
  local last = redis.call('HGET', KEYS[6], tenant)
  local best, best_room, wait_s, wait_l, out, reason, status = nil, -1, nil, nil, 0, nil, '0'
  for _, i in ipairs(eligible) do
    local s = look(i)
    local seconds, limit = held(s, batch)
    if seconds == nil then
      local room = math.min((s.a.pw - s.sent) / s.a.pw, (math.min(s.a.c, s.cap) - s.in_flight) / s.a.c)
      if s.a.n == last then room = 2 end
      if room > best_room then best, best_room = s, room end
    else
      if s.confirmed and limit == 'benched' then
        out = out + 1
        if not reason then reason, status = s.reason, s.status end
      end
      if wait_s == nil or seconds < wait_s then wait_s, wait_l = seconds, limit end
    end
  end
  if best then return best end
  if out == #eligible then return nil, nil, reason, status end
  return nil, wait_s, wait_l
end

local function admit(s, job, since, lane, tenant)
  redis.call('ZADD', s.p .. ':slots', ARGV[7], ARGV[6])
  redis.call('ZADD', s.p .. ':requests', now, ARGV[6])
  redis.call('EXPIRE', s.p .. ':requests', math.ceil(s.a.m) + 1)
  if lane == 'batch' then
    local tat = math.max(tonumber(redis.call('GET', s.p .. ':batch_due') or '0'), now) + s.a.i
    redis.call('SET', s.p .. ':batch_due', tostring(tat), 'PX', math.ceil((tat - now + s.a.ah) * 1000) + 1000)
  end
  redis.call('HSET', KEYS[6], tenant, s.a.n)
  redis.call('EXPIRE', KEYS[6], 86400)
  local probe = '0'
  if s.benched then
    redis.call('HSET', ARGV[9] .. s.a.n, 'until', tostring(now + tonumber(ARGV[11])))
    probe = '1'
  end
  return {job, since, lane, s.a.n, probe}
end

-- Takes the head job of `queue` out of the rotation's bookkeeping.
local function take(rotation, queue, tenant, job)
  redis.call('ZREM', queue, job)
  redis.call('ZREM', KEYS[4], ARGV[4])
  if redis.call('EXISTS', queue) == 0 then
    redis.call('ZREM', rotation, tenant)
  else
    redis.call('ZADD', rotation, redis.call('INCR', KEYS[2]), tenant)
  end
  local since = redis.call('HGET', KEYS[3], job) or ARGV[1]
  redis.call('HDEL', KEYS[3], job)
  return since
end

local waiting = nil
local function lane_of(rotation, prefix, lane)
  local tenants = redis.call('ZRANGE', rotation, 0, tonumber(ARGV[3]) - 1)
  for _, tenant in ipairs(tenants) do
    local queue = prefix .. tenant
    local head = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', 0, 1)
    if #head == 1 then
      local s, seconds, limit, status = choose(tenant, lane == 'batch')
      if s then
        return admit(s, head[1], take(rotation, queue, tenant, head[1]), lane, tenant)
      elseif seconds == nil then
        return {head[1], take(rotation, queue, tenant, head[1]), lane, '', 'refused', limit, status or '0'}
      elseif waiting == nil or (waiting[4] == lane and seconds < tonumber(waiting[2])) then
        waiting = {'wait', tostring(math.max(0, seconds)), limit, lane}
      end
    elseif redis.call('EXISTS', queue) == 0 then
      redis.call('ZREM', rotation, tenant)
    end
  end
  return nil
end

local taken = lane_of(KEYS[1], ARGV[2], 'interactive')
if taken then return taken end
taken = lane_of(KEYS[5], ARGV[5], 'batch')
if taken then return taken end
-- A ticket that has to wait is registered as waiting (one that took its job at once
-- never was), with a slot's expiry.
if waiting then redis.call('ZADD', KEYS[4], ARGV[7], ARGV[4]) end
return waiting
