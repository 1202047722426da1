-- The start of every script on a room's messages: meta_epoch(new) reads the
-- room's epoch from its meta hash (KEYS[1]); when Redis lost the hash, the
-- room starts epoch `new` at offset 0 and its stream (KEYS[2]), whose
-- offsets belonged to the lost epoch, goes.
local function meta_epoch(new)
  local epoch = redis.call('HGET', KEYS[1], 'e')
  if not epoch then
    epoch = new
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  end
  return epoch
end
