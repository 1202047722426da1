local n = redis.call('HINCRBY', KEYS[1], 'c', 1)
if n == 1 then
  redis.call('HSET', KEYS[1], 's', 'online', 'n', ARGV[1])
  redis.call('HDEL', KEYS[1], 'l')
end
redis.call('PERSIST', KEYS[1])
return n
