-- KEYS[1] = the tenant's upload slots (tenantlimits)
-- ARGV[1] = the slot id
-- ARGV[2] = the tenant's cap
-- ARGV[3] = the slot's lease (ms)
--
-- Redis's clock, so API hosts whose clocks differ agree on which leases ended. 1 when
-- taken, 0 at the cap.
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
