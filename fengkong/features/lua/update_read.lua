-- update_read.lua: read every feature of one event as of just before it, then
-- count the event, in one atomic call (one round trip, no other client can
-- interleave between the read and the write, a retried event_id is a no-op).
--
-- KEYS[1]      dedup key of the event_id (holds the JSON of the features it got)
-- KEYS[2..]    entity keys, referenced by index from the ops below
-- ARGV[1]      dedup TTL in seconds
-- ARGV[2]      event amount in minor units (integer, 0 when none)
-- ARGV[3..]    a sequence of ops; each starts with an opcode and a key index:
--   P k npairs g1 l1 .. gn ln default_limit   merchant profile; sets the limit
--        -> grade|false, limit, onboarded_day|false, daily_cap|false
--   R k N b ttl nc inc1..incnc   ring of N buckets, running totals; inc "N" = near-limit flag
--        -> nc totals before the event
--   D k member ts prune ttl nthr thr1..thrn   last-seen sorted set, distinct counts
--        -> n counts (members with last-seen >= thr)
--   S k member ts horizon prune ttl write -> is_new(1/0|false), members seen since horizon
--   F k ts ttl write           first seen -> previous first-seen ts | false
--   M k x ttl write            Welford moments -> n, mean, m2 (before)
--   H k hour ttl write         hour-of-day habit -> count in this hour, total (before)
--   V k day hour amount ttl write   merchant period volume and baselines -> 10 values
--   T k member amount ttl write     largest per-member volume (today) -> max before
--   L k ks member ipint        list membership (set, and IPv4 ranges in ks) -> 1/0
-- Returns {"ok", v1, v2, ...} (numbers as %.17g strings, false when missing), or
-- {"dup", json} with the values the first delivery of this event_id returned.

local dedup = KEYS[1]
local stored = redis.call('GET', dedup)
if stored then
  return {'dup', stored}
end

local out = {}
local function put(v)
  if v == nil or v == false then
    out[#out + 1] = false
  elseif type(v) == 'number' then
    out[#out + 1] = string.format('%.17g', v)
  else
    out[#out + 1] = v
  end
end

local amount = tonumber(ARGV[2])
local limit = nil
local argi = 3
local function nextarg()
  local v = ARGV[argi]
  argi = argi + 1
  return v
end

local function median(t)
  table.sort(t)
  local n = #t
  if n % 2 == 1 then
    return t[(n + 1) / 2]
  end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

local function op_profile(key)
  local npairs = tonumber(nextarg())
  local grade_limits = {}
  for _ = 1, npairs do
    local g = nextarg()
    grade_limits[g] = tonumber(nextarg())
  end
  local default_limit = tonumber(nextarg())
  local p = redis.call('HMGET', key, 'grade', 'single_limit', 'onboarded_day', 'daily_cap')
  local grade = p[1]
  if p[2] then
    limit = tonumber(p[2])
  elseif grade and grade_limits[grade] then
    limit = grade_limits[grade]
  else
    limit = default_limit
  end
  put(grade)
  put(limit)
  put(p[3] and tonumber(p[3]) or false)
  put(p[4] and tonumber(p[4]) or false)
end

local function op_ring(key)
  local n = tonumber(nextarg())
  local b = tonumber(nextarg())
  local ttl = nextarg()
  local nc = tonumber(nextarg())
  local incs = {}
  local any = false
  for i = 1, nc do
    local v = nextarg()
    if v == 'N' then
      if limit and amount * 10 >= limit * 9 and amount <= limit then v = 1 else v = 0 end
    else
      v = tonumber(v)
    end
    incs[i] = v
    if v ~= 0 then any = true end
  end
  local last = redis.call('HGET', key, 'L')
  if last then last = tonumber(last) else last = nil end
  if last then
    if b - last >= n then
      redis.call('DEL', key)
      last = nil
    elseif b > last then
      -- buckets last+1 .. b enter the window; the slots they reuse held buckets
      -- that now fall out of it, so their counts leave the running totals.
      for x = last + 1, b do
        local slot = x % n
        local sb = redis.call('HGET', key, 's' .. slot)
        if sb then
          for i = 1, nc do
            local f = 'c' .. slot .. '_' .. i
            local v = redis.call('HGET', key, f)
            if v then
              redis.call('HINCRBY', key, 't' .. i, -tonumber(v))
              redis.call('HDEL', key, f)
            end
          end
          redis.call('HDEL', key, 's' .. slot)
        end
      end
      redis.call('HSET', key, 'L', b)
      last = b
    end
  end
  for i = 1, nc do
    local t = redis.call('HGET', key, 't' .. i)
    put(t and tonumber(t) or 0)
  end
  if any and (last == nil or b > last - n) then
    local slot = b % n
    redis.call('HSET', key, 's' .. slot, b)
    if last == nil then
      redis.call('HSET', key, 'L', b)
    end
    for i = 1, nc do
      if incs[i] ~= 0 then
        redis.call('HINCRBY', key, 'c' .. slot .. '_' .. i, incs[i])
        redis.call('HINCRBY', key, 't' .. i, incs[i])
      end
    end
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_distinct(key)
  local member = nextarg()
  local ts = nextarg()
  local prune = nextarg()
  local ttl = nextarg()
  local nthr = tonumber(nextarg())
  for _ = 1, nthr do
    put(redis.call('ZCOUNT', key, nextarg(), '+inf'))
  end
  if member ~= '' then
    redis.call('ZADD', key, 'GT', ts, member)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. prune)
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_seen(key)
  local member = nextarg()
  local ts = nextarg()
  local horizon = nextarg()
  local prune = nextarg()
  local ttl = nextarg()
  local write = nextarg() == '1'
  if member == '' then
    put(false)
  else
    local sc = redis.call('ZSCORE', key, member)
    if sc and tonumber(sc) >= tonumber(horizon) then put(0) else put(1) end
  end
  put(redis.call('ZCOUNT', key, horizon, '+inf'))
  if write and member ~= '' then
    redis.call('ZADD', key, 'GT', ts, member)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. prune)
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_first(key)
  local ts = nextarg()
  local ttl = nextarg()
  local write = nextarg() == '1'
  local first = redis.call('GET', key)
  put(first and tonumber(first) or false)
  if write then
    if not first then
      redis.call('SET', key, ts)
    end
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_moments(key)
  local x = tonumber(nextarg())
  local ttl = nextarg()
  local write = nextarg() == '1'
  local m = redis.call('HMGET', key, 'n', 'mean', 'm2')
  local n = tonumber(m[1] or '0')
  local mean = tonumber(m[2] or '0')
  local m2 = tonumber(m[3] or '0')
  put(n)
  put(mean)
  put(m2)
  if write then
    n = n + 1
    local delta = x - mean
    mean = mean + delta / n
    m2 = m2 + delta * (x - mean)
    redis.call('HSET', key, 'n', n, 'mean', string.format('%.17g', mean), 'm2', string.format('%.17g', m2))
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_hour(key)
  local hour = nextarg()
  local ttl = nextarg()
  local write = nextarg() == '1'
  local m = redis.call('HMGET', key, 'h' .. hour, 'n')
  put(tonumber(m[1] or '0'))
  put(tonumber(m[2] or '0'))
  if write then
    redis.call('HINCRBY', key, 'h' .. hour, 1)
    redis.call('HINCRBY', key, 'n', 1)
    redis.call('EXPIRE', key, ttl)
  end
end

local function rollover(key, day, bd)
  -- Once per merchant per day: freeze today's baselines from the previous 28
  -- days' hourly volumes, and forget days that no baseline will read again.
  local first = tonumber(redis.call('HGET', key, 'f') or day)
  local cum_v, cum_c, hour_v = {}, {}, {}
  for k = 1, 28 do
    local fields = {}
    for h = 0, 23 do
      fields[#fields + 1] = 'v:' .. (day - k) .. ':' .. h
      fields[#fields + 1] = 'c:' .. (day - k) .. ':' .. h
    end
    local vals = redis.call('HMGET', key, unpack(fields))
    local cv, cc = 0, 0
    cum_v[k], cum_c[k], hour_v[k] = {}, {}, {}
    for h = 0, 23 do
      local v = tonumber(vals[2 * h + 1] or '0')
      cv = cv + v
      cc = cc + tonumber(vals[2 * h + 2] or '0')
      cum_v[k][h], cum_c[k][h], hour_v[k][h] = cv, cc, v
    end
  end
  local fields = {'bd', day}
  for _, span in ipairs({7, 28}) do
    for h = 0, 23 do
      if day - first >= span then
        local a, b, c = {}, {}, {}
        for k = 1, span do
          a[k], b[k], c[k] = cum_v[k][h], hour_v[k][h], cum_c[k][h]
        end
        fields[#fields + 1] = 'bt' .. span .. ':' .. h
        fields[#fields + 1] = string.format('%.17g', median(a))
        fields[#fields + 1] = 'bh' .. span .. ':' .. h
        fields[#fields + 1] = string.format('%.17g', median(b))
        fields[#fields + 1] = 'bc' .. span .. ':' .. h
        fields[#fields + 1] = string.format('%.17g', median(c))
      else
        redis.call('HDEL', key, 'bt' .. span .. ':' .. h, 'bh' .. span .. ':' .. h, 'bc' .. span .. ':' .. h)
      end
    end
  end
  redis.call('HSET', key, unpack(fields))
  -- prune the days that left the 28-day horizon since the last rollover
  local from = day - 31
  if bd and bd - 29 < from then from = math.max(bd - 29, day - 90) end
  local old = {}
  for d = from, day - 29 do
    old[#old + 1] = 'V:' .. d
    old[#old + 1] = 'C:' .. d
    for h = 0, 23 do
      old[#old + 1] = 'v:' .. d .. ':' .. h
      old[#old + 1] = 'c:' .. d .. ':' .. h
    end
  end
  redis.call('HDEL', key, unpack(old))
end

local function op_volume(key)
  local day = tonumber(nextarg())
  local hour = nextarg()
  local amt = tonumber(nextarg())
  local ttl = nextarg()
  local write = nextarg() == '1'
  local bd = redis.call('HGET', key, 'bd')
  if (not bd) or tonumber(bd) < day then
    rollover(key, day, bd and tonumber(bd))
  end
  local hv = 'v:' .. day .. ':' .. hour
  local hc = 'c:' .. day .. ':' .. hour
  local r = redis.call('HMGET', key, 'V:' .. day, 'C:' .. day, hv, hc,
    'bt7:' .. hour, 'bh7:' .. hour, 'bc7:' .. hour, 'bt28:' .. hour, 'bh28:' .. hour, 'bc28:' .. hour)
  for i = 1, 4 do
    put(tonumber(r[i] or '0'))
  end
  for i = 5, 10 do
    put(r[i] and tonumber(r[i]) or false)
  end
  if write then
    redis.call('HSETNX', key, 'f', day)
    redis.call('HINCRBY', key, 'V:' .. day, amt)
    redis.call('HINCRBY', key, 'C:' .. day, 1)
    redis.call('HINCRBY', key, hv, amt)
    redis.call('HINCRBY', key, hc, 1)
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_top(key)
  local member = nextarg()
  local amt = nextarg()
  local ttl = nextarg()
  local write = nextarg() == '1'
  local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  put(top[2] and tonumber(top[2]) or 0)
  if write and member ~= '' then
    redis.call('ZINCRBY', key, amt, member)
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_list(key)
  local kidx = tonumber(nextarg())
  local member = nextarg()
  local ipint = nextarg()
  local hit = redis.call('SISMEMBER', key, member)
  if hit == 0 and kidx > 0 and ipint ~= '' then
    -- ranges are stored as members "start:end" scored by their start address
    local r = redis.call('ZREVRANGEBYSCORE', KEYS[kidx], ipint, '-inf', 'LIMIT', 0, 1)
    if r[1] then
      local sep = string.find(r[1], ':', 1, true)
      if tonumber(string.sub(r[1], sep + 1)) >= tonumber(ipint) then hit = 1 end
    end
  end
  put(hit)
end

local ops = {
  P = op_profile, R = op_ring, D = op_distinct, S = op_seen, F = op_first,
  M = op_moments, H = op_hour, V = op_volume, T = op_top, L = op_list,
}

while argi <= #ARGV do
  local code = nextarg()
  local key = KEYS[tonumber(nextarg())]
  ops[code](key)
end

local result = {'ok'}
for i = 1, #out do
  result[i + 1] = out[i]
end
redis.call('SET', dedup, cjson.encode(out), 'EX', ARGV[1])
return result
