-- KEYS[1] = the job's hash (jobs; its lease fields are leases')
-- KEYS[2] = the lease index (leases)
-- ARGV[1] = when to look at the job, should its worker die before starting it
-- ARGV[2] = the job id
--
-- A worker got the job's message: look again then instead of after the queued grace.
-- Writes the `received_until` lease field and the lease index; 0 when the job is no
-- longer queued.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'received_until', ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
return 1
