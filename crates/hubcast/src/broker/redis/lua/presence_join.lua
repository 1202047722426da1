-- Adds a connection to a room's presence; the user's first connection
-- publishes a join event. Returns the user's connection count there.
-- With webhooks (KEYS[4..6], ARGV[7] delay ms, ARGV[8] now, ARGV[9] room): the room's
-- first member and the user's first connection are recorded.
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\31' .. ARGV[3] .. '\31' .. ARGV[4])
if added == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  if n == 1 then
    redis.call(ARGV[6], KEYS[3], 'p\njoin\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[5])
    if KEYS[4] then
      local room = ARGV[9]
      if redis.call('HLEN', KEYS[2]) == 1
        and not wh_back(KEYS[4], KEYS[5], KEYS[6], 'r\n' .. room, ARGV[8]) then
        wh_add(KEYS[4], 'room.occupied', ARGV[8], room, nil)
      end
      wh_add(KEYS[4], 'member.joined', ARGV[8], room, ARGV[2])
    end
  end
  return n
end
return -1
