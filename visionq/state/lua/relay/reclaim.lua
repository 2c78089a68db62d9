-- KEYS[1] = the messages a relay has taken and not yet seen confirmed (the broker's)
-- KEYS[2] = the relay list (the broker's)
-- ARGV[1] = the cutoff: messages queued before it (Unix seconds) are given back
--
-- Gives the messages of a relay that died while sending them back to the relay list, at
-- the end relays take from next. One a live relay is still sending may be sent twice;
-- a second message for a job is harmless.
local back = 0
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, message = pcall(cjson.decode, raw)
  if not ok or tonumber(message['at'] or 0) < tonumber(ARGV[1]) then
    if redis.call('LREM', KEYS[1], 1, raw) == 1 then
      redis.call('RPUSH', KEYS[2], raw)
      back = back + 1
    end
  end
end
return back
