-- KEYS[1] = the job's hash (jobs)
-- KEYS[2] = the tenant's index of jobs (jobs)
-- KEYS[3] = the lease index (leases)
-- KEYS[4] = the expiry index (blobs)
-- KEYS[5] = the job's set of images (blobs)
-- ARGV[1] = the job id
-- ARGV[2] = how long an orphaned image stays locked (ms)
-- ARGV[3] = keys.BLOB_PREFIX
-- ARGV[4] = keys.BLOB_LOCK_SUFFIX
-- ARGV[5..] = the images its record names (a job stored before its images were kept
--   beside it has only those)
--
-- Deletes the job, its entries in every index, and its references to its images: writes
-- every key above, and the images' sets of users and locks (drop_references). Returns
-- the images no job uses any more, locked.
if #ARGV > 4 then redis.call('SADD', KEYS[5], unpack(ARGV, 5)) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local orphans = drop_references(KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('DEL', KEYS[5])
return orphans
