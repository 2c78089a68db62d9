-- KEYS[1] = the account's health hash (pacing)
-- ARGV[1] = until when it is out of rotation (Unix seconds)
-- ARGV[2] = why: 'auth' or 'funds'
-- ARGV[3] = '1' when the fault is confirmed (a 401/403, or a probe's 402), '0' for a suspicion
-- ARGV[4] = seconds the hash is kept: past them the account is back without a probe
-- ARGV[5] = the HTTP status it answered (0: none)
--
-- A suspicion is a 402 that may have been MiMo's answer to a burst (its issue #99).
-- Takes the account out of rotation until ARGV[1]; once that passes, one call probes it
-- (pacing/admit). A suspicion never overwrites a confirmed fault.
if ARGV[3] == '0' and redis.call('HGET', KEYS[1], 'confirmed') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[1], 'reason', ARGV[2], 'confirmed', ARGV[3], 'status', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
