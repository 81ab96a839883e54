-- publish.lua: queue one webhook event in the outbox, if an active subscription wants
-- its kind (so a service nobody subscribed to stores nothing).
--
-- KEYS[1]  the wanted-kinds hash (kind -> number of active subscriptions that want it)
-- KEYS[2]  the outbox stream
-- ARGV[1]  the event's kind (decision.deny, rules.reloaded, ...)
-- ARGV[2]  the event's id (evt_...; the body carries it too)
-- ARGV[3]  the body every subscriber receives (JSON)
-- ARGV[4]  the backstop: twice the outbox cap (XADD MAXLEN ~; the delivery loops trim to the cap, trim.lua)
-- Returns the stream entry id, or nil when no active subscription wants the kind.
if not redis.call('HGET', KEYS[1], ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[2], 'kind', ARGV[1], 'body', ARGV[3])
