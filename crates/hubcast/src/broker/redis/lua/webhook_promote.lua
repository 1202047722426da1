-- Moves the pending events due by ARGV[1] (now) into the stream, oldest
-- due first: KEYS as in webhooks.lua.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[2], m)
  local ts = redis.call('HGET', KEYS[3], m)
  redis.call('HDEL', KEYS[3], m)
  wh_emit(KEYS[1], m, ts or ARGV[1])
end
return #due
