-- KEYS[1] = the job's hash (jobs)
-- KEYS[2] = the expiry index (blobs)
-- KEYS[3] = the tenant's index of jobs (jobs)
-- KEYS[4] = the lease index (leases)
-- KEYS[5] = the job's set of images (blobs)
-- KEYS[6] = the broker's list its first message goes to (the broker's), or the job's hash
-- KEYS[7] = the Idempotency-Key that comes to name the job (idempotency), or the job's hash
-- KEYS[8..7+n] = the sets of jobs using each of its n images (blobs)
-- ARGV[1] = the job id
-- ARGV[2] = the hash's TTL (seconds)
-- ARGV[3] = its score in the expiry index (when the hash expires)
-- ARGV[4] = its score in the lease index (when the sweeper first looks at it)
-- ARGV[5] = its first message, or "" for none
-- ARGV[6] = the Idempotency-Key's value, or "" for none
-- ARGV[7] = the Idempotency-Key's TTL (seconds)
-- ARGV[8] = n, the number of images
-- ARGV[9..8+n] = the images' hashes
-- ARGV[9+n..] = the job hash's field/value pairs
--
-- A new job, whole or not at all, in one command: one small reply to parse where a MULTI
-- of seven commands had nine, a third of the submit's Redis client CPU (bench/intake.py).
-- Writes every key above.
local id, n = ARGV[1], tonumber(ARGV[8])
redis.call('HSET', KEYS[1], unpack(ARGV, 9 + n))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], ARGV[4], id)
if ARGV[6] ~= '' then redis.call('SET', KEYS[7], ARGV[6], 'EX', ARGV[7]) end
for i = 1, n do redis.call('SADD', KEYS[7 + i], id) end
if n > 0 then redis.call('SADD', KEYS[5], unpack(ARGV, 9, 8 + n)) end
if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[6], ARGV[5]) end
