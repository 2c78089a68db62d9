-- KEYS[1] = a lock or a reservation (an image's lock of blobs, an idempotency key)
-- ARGV[1] = the value its holder set
--
-- Deletes it only while it still holds that value: a lock that ran out and was taken by
-- another holder is not ours to release. 1 when deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
