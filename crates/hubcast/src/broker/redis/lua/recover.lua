-- Ensures the meta hash, then returns the epoch, the top and the entries
-- after `since` (ARGV[3], -1 for none).
local entries = {}
if since >= 0 and since < top then
  entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
end
return {epoch, top, entries}
