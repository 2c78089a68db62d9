-- KEYS[1] = the batch's hash (batches)
-- KEYS[2] = the batch's line jobs (batches)
-- KEYS[3] = the batch's refused lines (batches)
-- ARGV[1] = the line number (1-based), which must be the batch's next
-- ARGV[2] = the byte offset just after the line
-- ARGV[3] = the line's outcome as JSON ({custom_id, error})
--
-- A line that could not become a job (its file was deleted since validation, say): kept
-- as failed in its place, so the files and the counts stay in line order. The same
-- compare as a job's admission (jobs/create), so a stale holder cannot count it twice.
-- 1 when recorded, 0 when the batch has moved past the line.
if redis.call('HGET', KEYS[1], 'line') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'line', tonumber(ARGV[1]) + 1, 'cursor', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'admitted', 1)
redis.call('HINCRBY', KEYS[1], 'failed', 1)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('RPUSH', KEYS[2], '!' .. ARGV[1])
return 1
