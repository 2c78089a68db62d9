-- KEYS[1] = an image's set of users (blobs)
-- KEYS[2] = its lock (blobs)
-- ARGV[1] = the lock's holder
-- ARGV[2] = how long to hold it more (ms)
--
-- Just before the file goes: still ours, and still nobody's image? Then hold it a while
-- more. An image a new job took up meanwhile is kept, and its lock let go.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('SCARD', KEYS[1]) > 0 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
