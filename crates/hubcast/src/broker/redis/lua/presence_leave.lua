-- Removes a connection from a room's presence; the user's last connection
-- publishes a leave event. Returns the user's remaining connections there.
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  if n <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call(ARGV[5], KEYS[3], 'p\nleave\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
  end
  return n
end
return -1
