local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
if ARGV[10] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then
    local sep = string.find(prev, ':', 1, true)
    if sep and string.sub(prev, 1, sep - 1) == epoch then
      return {tonumber(string.sub(prev, sep + 1)), epoch, 1}
    end
  end
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local env = ARGV[1] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[2]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 't', ARGV[9], 'd', env, 'n', ARGV[7], 'k', ARGV[8])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if ARGV[10] == '1' then
  redis.call('SET', KEYS[4], epoch .. ':' .. offset, 'EX', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call(ARGV[11], KEYS[3], offset .. '\n' .. epoch .. '\n' .. ARGV[7] .. '\n' .. ARGV[8] .. '\n' .. env)
return {offset, epoch, 0}
