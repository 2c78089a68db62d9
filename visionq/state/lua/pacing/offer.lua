-- KEYS[1] = the model's rotation of tenants (pacing)
-- KEYS[2] = the tenant's queue (pacing)
-- KEYS[3] = the models with jobs waiting (pacing)
-- KEYS[4] = since when each waiting job has been ready (pacing)
-- ARGV[1] = the job id
-- ARGV[2] = when it is due
-- ARGV[3] = the tenant
-- ARGV[4] = the model
-- ARGV[5] = since when it has been ready
--
-- Puts a ready job in its tenant's queue. A tenant new to the rotation (score 0) goes
-- first. When the job became ready is kept beside the queue, not as its score: a score
-- in the future would hide the job from a ticket whose worker's clock is behind ours.
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[1], 'NX', 0, ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
return 1
