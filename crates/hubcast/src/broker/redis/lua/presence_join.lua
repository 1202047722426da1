-- Adds a connection to a room's presence; the user's first connection
-- publishes a join event. Returns the user's connection count there.
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\31' .. ARGV[3] .. '\31' .. ARGV[4])
if added == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  if n == 1 then
    redis.call(ARGV[6], KEYS[3], 'p\njoin\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[5])
  end
  return n
end
return -1
