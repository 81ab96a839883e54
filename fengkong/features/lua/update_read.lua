-- update_read.lua: read every feature of one event as of just before it, then
-- count the event, in one atomic call (one round trip, no other client can
-- interleave between the read and the write, a retried event_id is a no-op).
--
-- KEYS[1]      dedup key of the event_id (holds the reply blob it got)
-- KEYS[2..]    entity keys, referenced by index from the ops below
-- ARGV[1]      dedup TTL in seconds
-- ARGV[2]      event amount in minor units (integer, 0 when none)
-- ARGV[4]      the layout tag of the reply (echoed first, stored with it)
-- ARGV[3]      the ops, one MessagePack array (packing 300 separate arguments
--              costs the client more than the whole script costs the server);
--              each op starts with an opcode and a key index:
--   P k npairs g1 l1 .. gn ln default_limit   merchant profile; sets the limit
--        -> grade|false, limit, onboarded_day|false, daily_cap|false, anomaly|false
--   R k size nrings (N b nc inc1..incnc)*nrings nextra (code mode value)*nextra ttl
--        an entity's state in one value of `size` doubles: its rings of N buckets
--        (inc "N" = the near-limit flag), then F first seen, M moments, H hour habit
--        -> each ring's nc totals, then F: first ts|false; M: n, mean, m2; H: count, total
--   D k member ts prune ttl nthr thr1..thrn   last-seen sorted set, distinct counts
--        -> n counts (members with last-seen >= thr)
--   S k member ts horizon prune ttl write -> is_new(1/0|false), members seen since horizon
--        (prune: "(bound", members last seen before the bound are dropped)
--   V k day hour amount ttl write   merchant period volume and baselines -> 10 values
--        (order: volume today, count today, volume hour, count hour, then the 7-day
--        and 28-day baselines: through this hour, this hour alone, count through it)
--   T k member amount ttl write     largest per-member volume (today) -> max before
--   L k ks member ipint        list membership (set, and IPv4 ranges in ks) -> 1/0
-- Values passed on to Redis come as decimal strings (Redis would format a Lua number
-- with "%.17g" on every call): the ttl of R, D, S, V and T; ts, thr, horizon of D
-- and S; V's hour; T's amount; L's ipint ("" when not IPv4).
-- Returns {"ok", msgpack([v1, v2, ...])} (false where missing), or {"dup", the same
-- blob the first delivery of this event_id returned}.

local dedup = KEYS[1]
local stored = redis.call('GET', dedup)
if stored then
  return {'dup', stored}
end

-- the first value is the layout of the reply (which ops ran), so that a retried
-- event_id whose body differs is told apart from a true retry
local out = {ARGV[4]}
local nout = 1
local function put(v)
  nout = nout + 1
  if v == nil then
    out[nout] = false
  else
    out[nout] = v
  end
end

local amount = tonumber(ARGV[2])
local limit = nil
local A = cmsgpack.unpack(ARGV[3])
local argi = 1  -- the next argument in A

-- the median of t's first n values (t is left unsorted)
local function median(t, n)
  local s = {}
  for i = 1, n do s[i] = t[i] end
  table.sort(s)
  if n % 2 == 1 then
    return s[(n + 1) / 2]
  end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

local function op_profile(key)
  local npairs = A[argi]
  local first_pair = argi + 1
  local default_limit = A[first_pair + 2 * npairs]
  argi = first_pair + 2 * npairs + 1
  local p = redis.call('HMGET', key, 'grade', 'single_limit', 'onboarded_day', 'daily_cap', 'anomaly')
  local grade = p[1]
  if p[2] then
    limit = tonumber(p[2])
  else
    limit = default_limit
    for i = first_pair, first_pair + 2 * npairs - 2, 2 do
      if A[i] == grade then
        limit = A[i + 1]
        break
      end
    end
  end
  put(grade)
  put(limit)
  put(p[3] and tonumber(p[3]) or false)
  put(p[4] and tonumber(p[4]) or false)
  put(p[5] and tonumber(p[5]) or false)
end

-- An entity's rings, all in one binary string of little-endian doubles, read and
-- patched in place by position (no decoding of the whole value). Ring r holds
-- [L, t1..tnc, (bucket, c1..cnc) x n]: L the newest bucket counted, t the running
-- totals of buckets L-n+1..L, then n slots. Zero is "empty" (bucket ids are large).
-- A newer bucket first subtracts the slots that leave the window; a slot left
-- from an older bucket is reused when its turn comes, so the value never grows.

local sunpack, spack, ssub = struct.unpack, struct.pack, string.sub

-- '<dd...d' for k doubles: one struct call reads or writes a whole record
local FMT = {'<d', '<dd', '<ddd', '<dddd', '<ddddd', '<dddddd', '<ddddddd', '<dddddddd'}
local function dfmt(k)
  local f = FMT[k]
  if not f then
    f = '<' .. string.rep('d', k)
    FMT[k] = f
  end
  return f
end

-- k zero doubles, cut from one string grown by doubling (string.rep builds byte by
-- byte, ~2 us per KiB here); a cut of a length made before is found interned
local Z = '\0\0\0\0\0\0\0\0'  -- one double 0
local function zeros(k)
  while #Z < k * 8 do Z = Z .. Z end
  return ssub(Z, 1, k * 8)
end

-- The entity's new value is built front to back from runs of the old value and
-- the records that changed, then joined once.
local old, pieces, npieces, done
local function keep(upto)  -- keep the old bytes up to offset `upto`
  if upto > done then
    npieces = npieces + 1
    pieces[npieces] = ssub(old, done + 1, upto)
    done = upto
  end
end
local function emit(bytes)  -- replace the old bytes from `done` on
  npieces = npieces + 1
  pieces[npieces] = bytes
  done = done + #bytes
end
local function emit_zeros(k)
  if k > 0 then emit(zeros(k)) end
end

local function op_rings(key)
  local size, nrings = A[argi], A[argi + 1]
  argi = argi + 2
  old = redis.call('GET', key)
  if not old or #old ~= size * 8 then old = zeros(size) end  -- none yet, or another layout
  pieces, npieces, done = {}, 0, 0
  local changed = false
  local near = (limit and amount * 10 >= limit * 9 and amount <= limit) and 1 or 0
  local at = 0  -- byte offset of the current section
  for _ = 1, nrings do
    local n, b, nc = A[argi], A[argi + 1], A[argi + 2]
    local i0 = argi + 2  -- A[i0 + i] increments counter i
    argi = i0 + nc + 1
    local width = nc + 1
    local w8 = width * 8
    local f = FMT[width] or dfmt(width)
    -- the header: t[1] = L, t[1 + i] = total i (t[width + 1], the next position, is unused)
    local t = {sunpack(f, old, at + 1)}
    local last = t[1]
    local reset = last == 0 or b - last >= n
    local any = false
    for i = 2, width do
      local inc = A[i0 + i - 1]
      if inc == 'N' then
        inc = near
        A[i0 + i - 1] = inc
      end
      if inc ~= 0 then any = true end
      if reset then t[i] = 0 end
    end
    if not reset and b > last then
      for x = last + 1, b do
        local off = at + (1 + x % n) * w8 + 1
        if sunpack('<d', old, off) ~= 0 then
          local rec = {sunpack(f, old, off)}
          for i = 2, width do t[i] = t[i] - rec[i] end
        end
      end
    end
    for i = 2, width do
      nout = nout + 1
      out[nout] = t[i]
    end
    if any and (reset or b > last - n) then
      local hi = b % n
      local soff = at + (1 + hi) * w8
      local rec
      if reset or b > last then
        t[1] = b
        rec = spack(f, b, unpack(A, i0 + 1, i0 + nc))
      else
        -- an older bucket still in the window: add to its slot
        local cur = {sunpack(f, old, soff + 1)}
        if cur[1] ~= b then
          rec = spack(f, b, unpack(A, i0 + 1, i0 + nc))
        else
          for i = 2, width do cur[i] = cur[i] + A[i0 + i - 1] end
          rec = spack(f, unpack(cur, 1, width))
        end
      end
      for i = 2, width do t[i] = t[i] + A[i0 + i - 1] end
      keep(at)
      emit(spack(f, unpack(t, 1, width)))
      if reset then
        emit_zeros(hi * width)
        emit(rec)
        emit_zeros((n - 1 - hi) * width)
      elseif b <= last then
        keep(soff)
        emit(rec)
      else
        -- slots last+1 .. b (cyclic) left the window: cleared, then b's is written
        local lo = (last + 1) % n
        if lo <= hi then
          keep(at + (1 + lo) * w8)
          emit_zeros((hi - lo) * width)
          emit(rec)
        else
          emit_zeros(hi * width)
          emit(rec)
          keep(at + (1 + lo) * w8)
          emit_zeros((n - lo) * width)
        end
      end
      changed = true
    end
    at = at + (1 + n) * w8
  end
  -- then the entity's other sections: F (first seen), M (Welford moments of the
  -- amount), H (hour-of-day counts, then their total); each: code, mode (1 read,
  -- 2 read and write), value
  local nextra = A[argi]
  argi = argi + 1
  for _ = 1, nextra do
    local code, write, value = A[argi], A[argi + 1] == 2, A[argi + 2]
    argi = argi + 3
    if code == 'F' then
      local first = sunpack('<d', old, at + 1)
      put(first ~= 0 and first or false)
      if write and first == 0 then
        keep(at)
        emit(spack('<d', value))
        changed = true
      end
      at = at + 8
    elseif code == 'M' then
      local n, mean, m2 = sunpack('<ddd', old, at + 1)
      put(n)
      put(mean)
      put(m2)
      if write then
        n = n + 1
        local delta = value - mean
        mean = mean + delta / n
        m2 = m2 + delta * (value - mean)
        keep(at)
        emit(spack('<ddd', n, mean, m2))
        changed = true
      end
      at = at + 24
    else
      local count = sunpack('<d', old, at + value * 8 + 1)
      local total = sunpack('<d', old, at + 24 * 8 + 1)
      put(count)
      put(total)
      if write then
        keep(at + value * 8)
        emit(spack('<d', count + 1))
        keep(at + 24 * 8)
        emit(spack('<d', total + 1))
        changed = true
      end
      at = at + 25 * 8
    end
  end
  local ttl = A[argi]
  argi = argi + 1
  if changed then
    keep(size * 8)
    redis.call('SET', key, table.concat(pieces, '', 1, npieces), 'EX', ttl)
  end
end

-- count a member as seen at ts; only a new member grows the set, so that is
-- when members last seen before the prune bound are dropped
local function touch(key, member, ts, prune, ttl)
  if redis.call('ZADD', key, 'GT', ts, member) == 1 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', prune)
  end
  redis.call('EXPIRE', key, ttl)
end

local function op_distinct(key)
  local member, ts, prune, ttl, nthr = A[argi], A[argi + 1], A[argi + 2], A[argi + 3], A[argi + 4]
  argi = argi + 5
  for i = argi, argi + nthr - 1 do
    nout = nout + 1
    out[nout] = redis.call('ZCOUNT', key, A[i], '+inf')
  end
  argi = argi + nthr
  if member ~= '' then
    touch(key, member, ts, prune, ttl)
  end
end

local function op_seen(key)
  local member, ts, horizon, prune, ttl, write = A[argi], A[argi + 1], A[argi + 2], A[argi + 3], A[argi + 4], A[argi + 5] == 1
  argi = argi + 6
  if member == '' then
    put(false)
  else
    local sc = redis.call('ZSCORE', key, member)
    if sc and tonumber(sc) >= tonumber(horizon) then put(0) else put(1) end
  end
  put(redis.call('ZCOUNT', key, horizon, '+inf'))
  if write and member ~= '' then
    touch(key, member, ts, prune, ttl)
  end
end

-- Merchant period volume. Fields of the merchant's volume hash:
--   f         first local day with a payment
--   cd        the open day: the latest day with a payment
--   V / C     volume and count of the open day; v:h / c:h the same per hour
--   P:d       closed day d packed as 72 fixed-width numbers: the volume through
--             each hour (cumulative), each hour's own volume, the cumulative count
--   B:h       baseline cache for hour h: "day bt7 bh7 bc7 bt28 bh28 bc28"
-- Closing a day packs its hours once; a baseline is computed once per merchant
-- and hour from the packs of the 28 previous days (read by position, no parsing).
local W = 15
local function packed_at(p, i)
  return tonumber(string.sub(p, i * W + 1, i * W + W))
end

local function close_day(key, cd, day)
  local fields = {}
  for h = 0, 23 do
    fields[#fields + 1] = 'v:' .. h
    fields[#fields + 1] = 'c:' .. h
  end
  local vals = redis.call('HMGET', key, unpack(fields))
  local cum_v, hour_v, cum_c = {}, {}, {}
  local cv, cc = 0, 0
  for h = 0, 23 do
    local v = tonumber(vals[2 * h + 1] or '0')
    cv = cv + v
    cc = cc + tonumber(vals[2 * h + 2] or '0')
    cum_v[h + 1] = string.format('%015.0f', cv)
    hour_v[h + 1] = string.format('%015.0f', v)
    cum_c[h + 1] = string.format('%015.0f', cc)
  end
  fields[#fields + 1] = 'V'
  fields[#fields + 1] = 'C'
  -- the packs of days that no baseline will read again (28 days back from `day`)
  for d = math.max(cd - 28, day - 60), day - 29 do
    fields[#fields + 1] = 'P:' .. d
  end
  redis.call('HDEL', key, unpack(fields))
  if cv > 0 or cc > 0 then
    redis.call('HSET', key, 'P:' .. cd, table.concat(cum_v) .. table.concat(hour_v) .. table.concat(cum_c))
  end
end

-- the baselines of `hour` on `day` (false where the merchant is too new for one),
-- cached in field `bfield` as "day bt7 bh7 bc7 bt28 bh28 bc28" ("-" for false)
local function baselines(key, day, hour, bfield, first)
  local age = first and day - first or -1
  local span = (age >= 28 and 28) or (age >= 7 and 7) or 0
  local base = {false, false, false, false, false, false}
  if span > 0 then
    local fields = {}
    for k = 1, span do fields[k] = string.format('P:%d', day - k) end
    local packs = redis.call('HMGET', key, unpack(fields))
    local a, b, c = {}, {}, {}
    for k = 1, span do
      local p = packs[k]
      if p then
        a[k], b[k], c[k] = packed_at(p, hour), packed_at(p, 24 + hour), packed_at(p, 48 + hour)
      else
        a[k], b[k], c[k] = 0, 0, 0
      end
    end
    base[1], base[2], base[3] = median(a, 7), median(b, 7), median(c, 7)
    if span == 28 then
      base[4], base[5], base[6] = median(a, 28), median(b, 28), median(c, 28)
    end
  end
  if first then
    -- only a merchant with payments has a key (with its TTL) worth caching in
    local text = {day}
    for i = 1, 6 do
      text[i + 1] = base[i] and string.format('%.17g', base[i]) or '-'
    end
    redis.call('HSET', key, bfield, table.concat(text, ' '))
  end
  return base
end

local function op_volume(key)
  local day, hour, amt, ttl, write = A[argi], A[argi + 1], A[argi + 2], A[argi + 3], A[argi + 4] == 1
  argi = argi + 5
  local vfield, cfield, bfield = 'v:' .. hour, 'c:' .. hour, 'B:' .. hour
  local r = redis.call('HMGET', key, 'f', 'cd', 'V', 'C', vfield, cfield, bfield)
  local first = r[1] and tonumber(r[1]) or nil
  local cd = r[2] and tonumber(r[2]) or nil
  if cd and day < cd then
    -- an event older than the merchant's open day: it neither reads nor
    -- revises the frozen volumes of a past day
    for _ = 1, 4 do put(0) end
    for _ = 1, 6 do put(false) end
    return
  end
  if cd and day > cd then
    close_day(key, cd, day)
    r[3], r[4], r[5], r[6] = false, false, false, false
  end
  local now = {}
  for i = 3, 6 do
    now[i] = tonumber(r[i] or '0')
    put(now[i])
  end
  local cached = {}
  if r[7] then
    cached = {string.match(r[7], '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')}
  end
  if tonumber(cached[1]) == day then
    for i = 2, 7 do
      if cached[i] == '-' then put(false) else put(tonumber(cached[i])) end
    end
  else
    local base = baselines(key, day, tonumber(hour), bfield, first)
    for i = 1, 6 do put(base[i]) end
  end
  if write then
    -- the four totals were just read: one HSET writes them all (and f, cd if new)
    local set = {'V', string.format('%.17g', now[3] + amt), 'C', now[4] + 1,
                 vfield, string.format('%.17g', now[5] + amt), cfield, now[6] + 1}
    if not first then
      set[#set + 1] = 'f'
      set[#set + 1] = day
    end
    if cd ~= day then
      set[#set + 1] = 'cd'
      set[#set + 1] = day
    end
    redis.call('HSET', key, unpack(set))
    redis.call('EXPIRE', key, ttl)
  elseif cd and day > cd then
    redis.call('HSET', key, 'cd', day)
  end
end

local function op_top(key)
  local member, amt, ttl, write = A[argi], A[argi + 1], A[argi + 2], A[argi + 3] == 1
  argi = argi + 4
  local top = redis.call('ZREVRANGE', key, '0', '0', 'WITHSCORES')
  put(top[2] and tonumber(top[2]) or 0)
  if write and member ~= '' then
    redis.call('ZINCRBY', key, amt, member)
    redis.call('EXPIRE', key, ttl)
  end
end

local function op_list(key)
  local kidx, member, ipint = A[argi], A[argi + 1], A[argi + 2]
  argi = argi + 3
  local hit = redis.call('SISMEMBER', key, member)
  if hit == 0 and kidx > 0 and ipint ~= '' then
    -- ranges are stored as members "start:end" scored by their start address
    local r = redis.call('ZREVRANGEBYSCORE', KEYS[kidx], ipint, '-inf', 'LIMIT', '0', '1')
    if r[1] then
      local sep = string.find(r[1], ':', 1, true)
      if tonumber(string.sub(r[1], sep + 1)) >= tonumber(ipint) then hit = 1 end
    end
  end
  put(hit)
end

local ops = {
  P = op_profile, R = op_rings, D = op_distinct, S = op_seen,
  V = op_volume, T = op_top, L = op_list,
}

local nargs = #A
while argi <= nargs do
  local code, key = A[argi], KEYS[A[argi + 1]]
  argi = argi + 2
  ops[code](key)
end

local blob = cmsgpack.pack(out)
redis.call('SET', dedup, blob, 'EX', ARGV[1])
return {'ok', blob}
