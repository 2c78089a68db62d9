-- KEYS[1] = the job's hash (jobs; its `webhook` field is outbox's)
-- KEYS[2] = the webhook outbox (outbox)
-- ARGV[1] = the job id
-- ARGV[2] = now (Unix seconds)
-- ARGV[3] = the terminal statuses, space separated (models.TERMINAL_STATUSES)
--
-- Sends a finished job's event again on a fresh schedule, in a new generation. Writes
-- the `webhook` field and the outbox. Returns 'ok', 'none' (no webhook) or 'unfinished'.
local raw = redis.call('HGET', KEYS[1], 'webhook')
if not raw or raw == 'null' then return 'none' end
local status = redis.call('HGET', KEYS[1], 'status')
if not string.find(' ' .. ARGV[3] .. ' ', ' ' .. status .. ' ', 1, true) then
  return 'unfinished'
end
local state = cjson.decode(raw)
state['generation'] = (state['generation'] or 0) + 1
state['status'] = 'pending'
state['attempts'] = 0
redis.call('HSET', KEYS[1], 'webhook', cjson.encode(state))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'ok'
