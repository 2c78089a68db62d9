-- KEYS[1] = the account's slots for the model's calls in flight (pacing)
-- KEYS[2] = the account's requests in the model's moving window (pacing)
-- KEYS[3] = the account's batch lane's theoretical arrival time (pacing)
-- ARGV[1] = the slot id (also the request's member in the window)
-- ARGV[2] = the batch lane's interval to give back, in seconds (0 for an interactive job)
--
-- Gives back what a turn took for a job it could not take after all (canceled, deleted,
-- finished, or held by a live worker), so that passing it over costs no budget.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBYFLOAT', KEYS[3], -tonumber(ARGV[2]))
end
return 1
