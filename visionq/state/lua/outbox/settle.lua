-- KEYS[1] = the job's hash (jobs; its `webhook` field is outbox's)
-- KEYS[2] = the webhook outbox (outbox)
-- ARGV[1] = the job id
-- ARGV[2] = the generation the attempt began with
-- ARGV[3] = the new delivery state (JSON)
-- ARGV[4] = the next due time, or "" when no attempt follows
--
-- Settles an attempt, state and schedule together, unless a redelivery began meanwhile
-- (it bumped the generation). Writes the `webhook` field and the outbox.
local raw = redis.call('HGET', KEYS[1], 'webhook')
if not raw or raw == 'null' then return 0 end
local state = cjson.decode(raw)
if tostring(state['generation'] or 0) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'webhook', ARGV[3])
if ARGV[4] == '' then redis.call('ZREM', KEYS[2], ARGV[1])
else redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
return 1
