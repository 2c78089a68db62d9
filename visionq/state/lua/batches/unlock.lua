-- KEYS[1] = the batch's lock (batches)
-- KEYS[2] = the batch's hash (batches)
-- ARGV[1] = the holder's token
--
-- Lets go of the lock unless the batch was woken meanwhile (a line finished, a cancel):
-- then the holder keeps it, the flag is cleared, and 1 tells it to advance the batch once
-- more. So a wake-up that found the lock held is never lost. 0 when let go.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], 'wake') == 1 then
  redis.call('HDEL', KEYS[2], 'wake')
  return 1
end
redis.call('DEL', KEYS[1])
return 0
