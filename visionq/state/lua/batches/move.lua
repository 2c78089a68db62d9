-- KEYS[1] = the batch's hash (batches)
-- KEYS[2] = the broker's list of the batch task (the broker's), or the batch's hash
-- ARGV[1] = the statuses allowed now, space separated
-- ARGV[2] = the new status, or "" to keep it
-- ARGV[3] = a message to push to KEYS[2] when applied (the batch task), or ""
-- ARGV[4..] = field/value pairs to set
--
-- The guarded step of a batch's status before it ends (validating -> in_progress | failed,
-- -> cancelling, -> finalizing): compare and set. With a message, the batch is also
-- flagged `wake` and its task is queued, in the same step. 1 when applied, {0, current}
-- when refused, nil when the batch is missing.
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return nil end
if not string.find(' ' .. ARGV[1] .. ' ', ' ' .. cur .. ' ', 1, true) then return {0, cur} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'wake', 1)
  redis.call('LPUSH', KEYS[2], ARGV[3])
end
return 1
