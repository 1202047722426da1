-- Like RECOVER, for `history`: entries after `since` (or the latest ones)
-- up to ARGV[4], and the oldest entry held.
local entries
if since >= 0 then
  entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[4])
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
return {epoch, top, entries, first}
