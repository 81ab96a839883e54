-- trim.lua: hold the outbox to its cap, dropping the oldest events not yet fanned out,
-- and count what was dropped (so that a drop is never silent).
--
-- KEYS[1]  the outbox stream
-- KEYS[2]  the count of events ever dropped at the cap (a string holding an integer)
-- ARGV[1]  the cap (entries)
-- Returns how many entries this call dropped (0 under the cap).
local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if over <= 0 then
  return 0
end
local dropped = redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
redis.call('INCRBY', KEYS[2], dropped)
return dropped
