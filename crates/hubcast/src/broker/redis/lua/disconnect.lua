local n = redis.call('HINCRBY', KEYS[1], 'c', -1)
if n <= 0 then
  if ARGV[3] == '1' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 'c', 0, 's', 'offline', 'l', ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[2])
  end
end
return n
