-- KEYS[1] = the job's hash (jobs)
-- KEYS[2] = the expiry index (blobs)
-- KEYS[3] = the tenant's index of jobs (jobs)
-- KEYS[4] = the lease index (leases)
-- KEYS[5] = the job's set of images (blobs)
-- KEYS[6] = the broker's list its first message goes to (the broker's), or the job's hash
-- KEYS[7] = the Idempotency-Key that comes to name the job (idempotency), or the job's hash
-- KEYS[8] = a batch line's batch hash (batches), or the job's hash
-- KEYS[9] = the batch's line jobs (batches), or the job's hash
-- KEYS[10] = the batch's unfinished line jobs (batches), or the job's hash
-- KEYS[11] = the index of jobs by deadline (jobs)
-- KEYS[12..11+n] = the sets of jobs using each of its n images (blobs)
-- ARGV[1] = the job id
-- ARGV[2] = the hash's TTL (seconds)
-- ARGV[3] = its score in the expiry index (when the hash expires)
-- ARGV[4] = its score in the lease index (when the sweeper first looks at it)
-- ARGV[5] = its first message, or "" for none
-- ARGV[6] = the Idempotency-Key's value, or "" for none
-- ARGV[7] = the Idempotency-Key's TTL (seconds)
-- ARGV[8] = n, the number of images
-- ARGV[9] = a batch line's line number, which must be the batch's next, or ""
-- ARGV[10] = the byte offset just after the line in the batch's input
-- ARGV[11] = its deadline (Unix seconds), or ""
-- ARGV[12..11+n] = the images' hashes
-- ARGV[12+n..] = the job hash's field/value pairs
--
-- A new job, whole or not at all, in one command: one small reply to parse where a MULTI
-- of seven commands had nine, a third of the submit's Redis client CPU (bench/intake.py).
-- A batch line is admitted in the same step: the batch moves past the line only together
-- with the line's job, so a worker that dies between the two cannot admit it twice, and a
-- stale one finds the batch past its line (0, nothing written). Writes every key above.
local id, n = ARGV[1], tonumber(ARGV[8])
if ARGV[9] ~= '' then
  if redis.call('HGET', KEYS[8], 'line') ~= ARGV[9] then return 0 end
  redis.call('HSET', KEYS[8], 'line', tonumber(ARGV[9]) + 1, 'cursor', ARGV[10])
  redis.call('HINCRBY', KEYS[8], 'admitted', 1)
  redis.call('HINCRBY', KEYS[8], 'in_flight', 1)
  redis.call('RPUSH', KEYS[9], id)
  redis.call('SADD', KEYS[10], id)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 12 + n))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], ARGV[4], id)
if ARGV[6] ~= '' then redis.call('SET', KEYS[7], ARGV[6], 'EX', ARGV[7]) end
for i = 1, n do redis.call('SADD', KEYS[11 + i], id) end
if n > 0 then redis.call('SADD', KEYS[5], unpack(ARGV, 12, 11 + n)) end
if ARGV[11] ~= '' then redis.call('ZADD', KEYS[11], ARGV[11], id) end
if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[6], ARGV[5]) end
return 1
