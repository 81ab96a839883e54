-- claim.lua: lease the deliveries that are due, so that one worker sends each.
--
-- KEYS[1]  the retry schedule (sorted set: delivery id -> unix time it is due)
-- KEYS[2]  the subscriptions hash (subscription id -> JSON)
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  the lease (seconds)
-- ARGV[3]  at most this many
-- ARGV[4]  the key prefix of delivery hashes (same hash tag as KEYS)
-- A leased delivery's score becomes now + lease: if the worker dies before it settles
-- the delivery (settle.lua), it is due again then and another worker sends it (at least
-- once). A delivery whose subscription was deleted, or whose hash is gone, is dropped.
-- Returns one {delivery id, subscription JSON, attempts so far, body, kind} per lease.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
local lease_until = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, did in ipairs(due) do
  local key = ARGV[4] .. did
  local d = redis.call('HMGET', key, 'sub', 'attempts', 'body', 'kind')
  local sub = false
  if d[1] then
    sub = redis.call('HGET', KEYS[2], d[1])
  end
  if not sub then
    redis.call('ZREM', KEYS[1], did)
    redis.call('DEL', key)
  else
    redis.call('ZADD', KEYS[1], lease_until, did)
    out[#out + 1] = {did, sub, d[2], d[3], d[4]}
  end
end
return out
