-- KEYS[1] = the batch's hash (batches)
-- KEYS[2] = the tenant's index of batches (batches)
-- KEYS[3] = the batches due a look (batches)
-- KEYS[4] = the broker's list its first message goes to (the broker's)
-- ARGV[1] = the batch id
-- ARGV[2] = when the sweeper first makes sure it is being advanced
-- ARGV[3] = its first message (the batch task)
-- ARGV[4] = the hash's TTL (seconds): a batch that never ends still goes in the end
-- ARGV[5..] = the hash's field/value pairs
--
-- A new batch, `validating`, with its first task: whole or not at all.
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[3])
return 1
