-- Removes a connection from a room's presence; the user's last connection
-- publishes a leave event. Returns the user's remaining connections there.
-- With webhooks (KEYS[4..6], ARGV[6] delay ms, ARGV[7] now, ARGV[8] room):
-- the member's leave, and the room's vacancy after the delay.
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  if n <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call(ARGV[5], KEYS[3], 'p\nleave\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
    if KEYS[4] then
      wh_add(KEYS[4], 'member.left', ARGV[7], ARGV[8], ARGV[2])
      if redis.call('HLEN', KEYS[2]) == 0 then
        wh_later(KEYS[5], KEYS[6], 'r\n' .. ARGV[8], ARGV[6], ARGV[7])
      end
    end
  end
  return n
end
return -1
