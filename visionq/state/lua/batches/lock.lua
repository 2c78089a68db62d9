-- KEYS[1] = the batch's lock (batches)
-- KEYS[2] = the batch's hash (batches)
-- ARGV[1] = the holder's token
-- ARGV[2] = how long the lock lasts unrenewed (ms)
--
-- Takes the lock of the one worker advancing the batch, and clears its `wake` flag: the
-- holder reads the batch after this, so it sees every line finished before now. 1 when
-- taken; 0 when another holds it (that holder sees the flag when it lets go).
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HDEL', KEYS[2], 'wake')
  return 1
end
return 0
