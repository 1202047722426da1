-- The start of RECOVER and HISTORY: creates the meta hash with a new epoch
-- (ARGV[1]) when Redis lost it, refreshes its TTL (ARGV[2]), and reads the
-- epoch, the top and `since` (ARGV[3], -1 for none).
local epoch = meta_epoch(ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local since = tonumber(ARGV[3])
