-- fanout.lua: turn outbox entries into deliveries, one per active subscription that
-- wants the entry's kind, and take the entries off the outbox in the same step (so an
-- entry held by two workers, after XAUTOCLAIM, is still fanned out once).
--
-- KEYS[1]  the outbox stream
-- KEYS[2]  the subscriptions hash (subscription id -> JSON with id, url, kinds, active, secret)
-- KEYS[3]  the retry schedule (sorted set: delivery id -> unix time it is due)
-- ARGV[1]  the outbox's consumer group
-- ARGV[2]  now (unix seconds)
-- ARGV[3]  the key prefix of delivery hashes (the delivery id follows it; same hash tag
--          as KEYS, so one cluster slot)
-- ARGV[4..] the stream entry ids
-- Each delivery is the hash <ARGV[3]><event id>.<subscription id> with sub, event, kind,
-- body, attempts (0) and created_at, scheduled at now. Returns how many were created.
local subs = {}
local raw = redis.call('HVALS', KEYS[2])
for i = 1, #raw do
  local s = cjson.decode(raw[i])
  if s.active then
    local kinds = {}
    for _, k in ipairs(s.kinds) do kinds[k] = true end
    subs[#subs + 1] = {id = s.id, kinds = kinds}
  end
end
local created = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local entries = redis.call('XRANGE', KEYS[1], id, id)
  if #entries == 1 then
    local fields = entries[1][2]
    local e = {}
    for j = 1, #fields, 2 do e[fields[j]] = fields[j + 1] end
    for _, s in ipairs(subs) do
      if s.kinds[e.kind] then
        local did = e.id .. '.' .. s.id
        local key = ARGV[3] .. did
        if redis.call('EXISTS', key) == 0 then
          redis.call('HSET', key, 'sub', s.id, 'event', e.id, 'kind', e.kind, 'body', e.body,
                     'attempts', 0, 'created_at', ARGV[2])
          redis.call('ZADD', KEYS[3], ARGV[2], did)
          created = created + 1
        end
      end
    end
  end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
return created
