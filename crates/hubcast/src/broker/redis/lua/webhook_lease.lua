-- Takes or renews a webhook's delivery lease (KEYS[1]) for node ARGV[1],
-- ARGV[2] ms: 1 when this node holds it now, 0 when another does.
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
