-- The start of RECOVER and HISTORY: creates the meta hash with a new epoch
-- (ARGV[1]) when Redis lost it, refreshes its TTL (ARGV[2]), and reads the
-- epoch, the top and `since` (ARGV[3], -1 for none).
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local since = tonumber(ARGV[3])
