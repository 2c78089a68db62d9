-- KEYS[1] = the job's hash (jobs), read only
-- KEYS[2] = the job's set of images (blobs)
-- ARGV[1] = the job id
-- ARGV[2] = keys.BLOB_PREFIX
-- ARGV[3..] = the images' hashes
--
-- Records that the job uses the images, unless the job is gone (then nothing would ever
-- drop the references). Writes the job's set and each image's set of users.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV do redis.call('SADD', ARGV[2] .. ARGV[i], ARGV[1]) end
redis.call('SADD', KEYS[2], unpack(ARGV, 3))
return 1
