-- KEYS[1] = the batch's lock (batches)
-- ARGV[1] = the holder's token
-- ARGV[2] = how long the lock lasts unrenewed (ms)
--
-- Pushes the lock's end forward while it is still this holder's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
