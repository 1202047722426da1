-- Publishes one message atomically: the msgId check, the next offset, the
-- stream entry and the channel message. The payload (ARGV[1]) is opaque
-- here: the nodes build the envelope around it (src/broker/redis/codec.rs).
-- KEYS: 1 meta hash, 2 stream, 3 channel, 4 msgId key.
-- ARGV: 1 payload, 2 history size, 3 history ttl (s), 4 meta ttl (s),
-- 5 epoch for a new meta hash, 6 node, 7 connection key, 8 time (ms),
-- 9 check the msgId ('1': the publisher's, and every one on a cluster,
-- whose client may send a script twice), 10 publish command
-- (publish or spublish).
-- With webhooks wanting this room's messages, also KEYS[5] the webhook
-- event stream and ARGV 11 the room: `message.published` is appended in
-- this script, so an acknowledged publish has its event (the node builds
-- the envelope from `o`, `e` and `d` when it reads the event). A
-- duplicate is not a message, and records nothing.
-- Every msgId is remembered, the server's own too: a publish that timed out
-- is retried with its msgId (then as the publisher's), and the retry must
-- find the first attempt if that went through.
local epoch = meta_epoch(ARGV[5])
if ARGV[9] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then
    local sep = string.find(prev, ':', 1, true)
    if sep and string.sub(prev, 1, sep - 1) == epoch then
      return {tonumber(string.sub(prev, sep + 1)), epoch, 1}
    end
  end
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 't', ARGV[8], 'd', ARGV[1], 'n', ARGV[6], 'k', ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('SET', KEYS[4], epoch .. ':' .. offset, 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if KEYS[5] then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', '100000', '*', 't', 'message.published', 'ts', ARGV[8], 'r', ARGV[11], 'o', offset, 'e', epoch, 'd', ARGV[1])
end
redis.call(ARGV[10], KEYS[3], offset .. '\n' .. epoch .. '\n' .. ARGV[6] .. '\n' .. ARGV[7] .. '\n' .. ARGV[1])
return {offset, epoch, 0}
