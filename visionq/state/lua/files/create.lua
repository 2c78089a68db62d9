-- KEYS[1] = the file's hash (files)
-- KEYS[2] = the tenant's index of files (files)
-- KEYS[3] = the expiry index (blobs)
-- KEYS[4] = the file's set of images (blobs)
-- KEYS[5] = the set of holders of its image (blobs), or the file's hash
-- ARGV[1] = the file id
-- ARGV[2] = the hash's TTL (seconds)
-- ARGV[3] = its score in the expiry index (when the hash expires)
-- ARGV[4] = the image's sha256, for a vision file, or ""
-- ARGV[5..] = the hash's field/value pairs
--
-- A new file, whole or not at all: a vision file holds its image as a job does (the same
-- sets), so the image stays while either uses it and goes with the last; and every file is
-- in the expiry index, so the sweeper removes its bytes once its hash has expired.
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('SADD', KEYS[5], ARGV[1])
  redis.call('SADD', KEYS[4], ARGV[4])
end
return 1
