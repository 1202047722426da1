-- Uncounts a connection. With webhooks (KEYS[2..4], ARGV[4] delay ms,
-- ARGV[5] now, ARGV[6] user): the last one is user.offline after the
-- delay.
local n = redis.call('HINCRBY', KEYS[1], 'c', -1)
if n <= 0 then
  if ARGV[3] == '1' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 'c', 0, 's', 'offline', 'l', ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[2])
  end
  if KEYS[2] then
    wh_later(KEYS[3], KEYS[4], 'u\n' .. ARGV[6], ARGV[4], ARGV[5])
  end
end
return n
