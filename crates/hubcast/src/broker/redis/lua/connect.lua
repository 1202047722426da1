-- Counts a connection for its user's status. With webhooks (KEYS[2..4],
-- ARGV[2] delay ms, ARGV[3] now, ARGV[4] user): the first connection is
-- user.online, unless the user is back within the delay.
local n = redis.call('HINCRBY', KEYS[1], 'c', 1)
if n == 1 then
  redis.call('HSET', KEYS[1], 's', 'online', 'n', ARGV[1])
  redis.call('HDEL', KEYS[1], 'l')
  if KEYS[2] and not wh_back(KEYS[2], KEYS[3], KEYS[4], 'u\n' .. ARGV[4], ARGV[3]) then
    wh_add(KEYS[2], 'user.online', ARGV[3], nil, ARGV[4])
  end
end
redis.call('PERSIST', KEYS[1])
return n
