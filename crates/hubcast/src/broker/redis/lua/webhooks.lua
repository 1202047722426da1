-- Webhook events (broker/redis/webhooks.rs), the start of the presence
-- scripts when webhooks are on: KEYS[WH] the stream, KEYS[WH+1] the
-- pending sorted set, KEYS[WH+2] the pending events' times.
local function wh_add(stream, ty, ts, room, user)
  local args = {stream, 'MAXLEN', '~', '100000', '*', 't', ty, 'ts', ts}
  if room then table.insert(args, 'r'); table.insert(args, room) end
  if user then table.insert(args, 'u'); table.insert(args, user) end
  redis.call('XADD', unpack(args))
end
-- A pending member ("r\n<room>" or "u\n<user>") becomes its event.
local function wh_emit(stream, member, ts)
  local who = string.sub(member, 3)
  if string.sub(member, 1, 1) == 'r' then
    wh_add(stream, 'room.vacated', ts, who, nil)
  else
    wh_add(stream, 'user.offline', ts, nil, who)
  end
end
-- A return: true when it cancelled a pending event still within its delay
-- (then nothing is sent); an overdue one is sent first, it happened.
local function wh_back(stream, zset, times, member, now)
  local due = redis.call('ZSCORE', zset, member)
  if not due then return false end
  redis.call('ZREM', zset, member)
  local ts = redis.call('HGET', times, member)
  redis.call('HDEL', times, member)
  if tonumber(due) <= tonumber(now) then
    wh_emit(stream, member, ts or now)
    return false
  end
  return true
end
local function wh_later(zset, times, member, delay, now)
  redis.call('ZADD', zset, tonumber(now) + tonumber(delay), member)
  redis.call('HSET', times, member, now)
end
