-- KEYS[1] = the batch's hash (batches)
-- KEYS[2] = the batches due a look (batches)
-- KEYS[3] = the webhook outbox (outbox)
-- KEYS[4] = the batch's line jobs (batches)
-- KEYS[5] = the batch's refused lines (batches)
-- KEYS[6] = the batch's unfinished line jobs (batches)
-- ARGV[1] = the statuses allowed now, space separated
-- ARGV[2] = the final status
-- ARGV[3] = the TTL from now (seconds)
-- ARGV[4] = now (Unix seconds)
-- ARGV[5] = the batch id
-- ARGV[6..] = field/value pairs to set (the counts as written to its files, the files)
--
-- A batch's end: its status, counts and files in one step, so what a client reads always
-- matches the files; the batch leaves the sweeper's index, its keys expire together, and
-- with a webhook it goes to the outbox in the same step. 1 when applied, {0, current}
-- when refused, nil when missing.
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return nil end
if not string.find(' ' .. ARGV[1] .. ' ', ' ' .. cur .. ' ', 1, true) then return {0, cur} end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 6))
redis.call('HDEL', KEYS[1], 'wake')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('EXPIRE', KEYS[5], ARGV[3])
redis.call('DEL', KEYS[6])
redis.call('ZREM', KEYS[2], ARGV[5])
local webhook = redis.call('HGET', KEYS[1], 'webhook')
if webhook and webhook ~= 'null' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5]) end
return 1
