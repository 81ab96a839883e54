-- settle_claim.lua: store a record over an event id's claim unless a record is there
-- already. A request that did not count its event (a duplicate whose first delivery
-- left no record: it degraded or died after counting) decides on the features the
-- claim holds and adopts the key with this; a record that arrived meanwhile wins
-- (fengkong/api/service/idempotency.py).
--
-- KEYS[1]  the event id's claim and record key ({evt:<id>}:request)
-- ARGV[1]  the record: its first byte is \1 (compact), \2 (deflated), \3 (compressed) or "{" (JSON);
--          anything else in the key (the script's features blob, a cluster claim marker) is a claim
-- ARGV[2]  the record's TTL in seconds
-- Returns nil when the record was stored, or the record found there (left as it is).
local cur = redis.call('GET', KEYS[1])
if cur then
  local head = string.byte(cur, 1)
  if head == 1 or head == 2 or head == 3 or head == 123 then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
