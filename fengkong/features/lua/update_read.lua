-- update_read.lua: read every feature of one event as of just before it, then
-- count the event, in one atomic call (one round trip, no other client can
-- interleave between the read and the write, a retried event_id is a no-op).
--
-- KEYS[1]    the event_id's claim, ``{evt:<id>}:request``: holds the reply blob the
--            event got until the service replaces it with the decision record (any value
--            there means "counted"); when ARGV[1] is "0", any key of the call's slot,
--            never read or written
-- KEYS[2..]  entity keys, then the lists' fixed keys, referenced by index from the ops
-- ARGV[1]    dedup TTL in seconds; "0": no dedup in this call (on a Redis Cluster the
--            event id is claimed first, then this script runs once per entity's slot:
--            fengkong/features/cluster_store.py)
-- ARGV[2]    the event's amount in minor units (integer, 0 when none)
-- ARGV[3]    the ops, one MessagePack array (one argument, not hundreds: packing
--            many arguments costs the client more than the script costs the server)
-- ARGV[4]    the reply tag: which ops ran (echoed first in the reply, stored with it)
-- ARGV[5]    optional: the claim key of the format before (``{evt:<id>}:dedup``, same
--            slot as KEYS[1]), read when KEYS[1] is empty, so that an event counted
--            before an upgrade is not counted again
-- Returns {"ok", msgpack([tag, v1, v2, ...])} (false where missing), or {"dup", what
-- the claim holds: the blob the first delivery got, or the decision record stored
-- over it}.
--
-- Each op is: opcode, index of its key in KEYS, then its arguments. The opcode picks
-- the op's function from OPS at the end; fengkong/features/ops.py has one class per
-- opcode that encodes the arguments and decodes the values (the class names the
-- function). Arguments -> reply values, per opcode:
--   P op_profile   npairs g1 l1 .. gn ln default_limit   (the merchant profile; sets
--        the limit) -> grade|false, limit, onboarded_day|false, daily_cap|false,
--        anomaly|false, promotions|false (the planned campaigns' text, features/promotions.py)
--   R op_state     size nrings (N b nc inc1..incnc)*nrings nextra (code mode value)*nextra
--        ngroups [ts (tag nsets (kind member legacy nthr thr1..thrn)*nsets)*ngroups] ttl
--        (the thresholds are numbers):
--        an entity's state in one value (`size`: the doubles of its layout, stored
--        compact: only the buckets in use, see op_state): its rings of N buckets (inc
--        "N" = the near-limit flag), then F first seen, M moments, H hour habit, K<k> the
--        last k amounts (mode 1 read, 2 read and write), then its groups of sets (kind
--        0/1 distinct count, 2/3 seen, 4/5 first use; odd: the event counts in it;
--        legacy: the key it was kept in before, see state_sets) -> each ring's nc
--        totals, then F: first ts|false; M: n, mean, m2; H: count, total; K: amounts
--        ever written, then the k slots of the ring; then per distinct set n counts
--        (members last seen at or after each thr), per seen set is_new (1/0|false) and
--        the members seen since thr, per first use the member's first use in its run
--        (0: none since thr, false: no member)
--   D op_distinct  member ts prune ttl nthr thr1..thrn   (last-seen sorted set; member
--        "" = read only) -> n counts (members with last-seen >= thr)
--   V op_volume    day hour amount ttl write   (merchant period volume) -> volume
--        today, count today, volume hour, count hour, then the 7-day and 28-day
--        baselines: through this hour, this hour alone, count through it
--   T op_top       member amount ttl write   (largest per-member volume today) -> max
--        before
--   C op_makeup    ts new_within day ttl write card_at user_at pair_at   (today's make-up of
--        the merchant's payments, a hash per business day: c new cards, u new accounts,
--        r returning cards; *_at: where the card's first seen, the account's, and the
--        card's first day at this merchant are in `out`, 0 the event lacks it, -1 another
--        call reads it: count nothing here) -> c, u, r today before the event (the
--        new counts are written in one HSET; the TTL is set when the day's hash is made)
--   L op_list      ks member ipint   (set membership, and IPv4 ranges in KEYS[ks] if
--        ks > 0) -> 1/0
-- Values passed on to Redis come as decimal strings (Redis would format a Lua number
-- with "%.17g" on every call): the ttl of R, D, V and T; ts, thr of D; V's hour; T's
-- amount; L's ipint ("" when not IPv4).

local dedup = ARGV[1] ~= '0' and KEYS[1]
if dedup then
  -- one EXISTS over both claims: nearly every event is new, and an integer reply
  -- costs Lua less than two GETs' nils; only a retry reads what its claim holds
  local legacy = ARGV[5]
  local found
  if legacy then
    found = redis.call('EXISTS', dedup, legacy)
  else
    found = redis.call('EXISTS', dedup)
  end
  if found ~= 0 then
    local stored = redis.call('GET', dedup)
    if not stored then stored = redis.call('GET', legacy) end
    return {'dup', stored}
  end
end

-- the first value is the reply tag (which ops ran), so that a retried event_id
-- whose body differs is told apart from a true retry. The table is made with room for
-- 192 values (a payment's reply has 166 with nine lists; a wider one grows it), as a
-- table grown one value at a time is rehashed at 2, 4, 8, ..., 128 (the nils cost the
-- constructor one instruction a run).
local out = {ARGV[4], nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
             nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
local nout = 1

local amount = tonumber(ARGV[2])
local limit = nil
-- the near-limit flag ("N" increments): 1 when the amount is within 10 % under the
-- merchant's limit (set with the limit, by op_profile, which runs first)
local near = 0
-- ARGV[3] is one MessagePack array; its items are unpacked as a stream (the array's
-- header cut off) straight into a table constructor, which sizes the table once
-- (cmsgpack's own array decoding grows it item by item). A stream leaves every item
-- on the Lua stack at once, which holds 8000: an array of 6000 bytes or more (none
-- is near this) is decoded as a whole.
local A
do
  local ops = ARGV[3]
  local head = string.byte(ops, 1)
  if head >= 0x90 and head <= 0x9f then
    A = {cmsgpack.unpack(string.sub(ops, 2))}
  elseif head == 0xdc and #ops < 6000 then
    A = {cmsgpack.unpack(string.sub(ops, 4))}
  else
    A = cmsgpack.unpack(ops)
  end
end
local argi = 1  -- the next argument in A

-- (library functions the ops call, in locals: declared after the other locals the
-- ops share, as a closure finds its upvalues by walking the open ones newest first)
local rcall, tonumber, unpack, concat = redis.call, tonumber, unpack, table.concat
local sformat = string.format
local sunpack, spack, ssub, sbyte = struct.unpack, struct.pack, string.sub, string.byte

-- OPS, the function of each opcode, and the functions they call are all made, on
-- every call of the script, inside this one function (it ends above the main loop,
-- unindented): a function made inside another takes the locals above from that
-- one's upvalues, by copy, where one made here would look each up among the open
-- upvalues, one walk per local per function.
local OPS = (function()

local function op_profile(key)
  local npairs = A[argi]
  local first_pair = argi + 1
  local default_limit = A[first_pair + 2 * npairs]
  argi = first_pair + 2 * npairs + 1
  local p = rcall('HMGET', key, 'grade', 'single_limit', 'onboarded_day', 'daily_cap', 'anomaly', 'promotions')
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
  out[nout + 1] = grade  -- false when none
  out[nout + 2] = limit or false  -- nil if single_limit is not a number
  near = (limit and amount * 10 >= limit * 9 and amount <= limit) and 1 or 0
  out[nout + 3] = p[3] and tonumber(p[3]) or false
  out[nout + 4] = p[4] and tonumber(p[4]) or false
  out[nout + 5] = p[5] and tonumber(p[5]) or false
  out[nout + 6] = p[6] or false
  nout = nout + 6
end

-- An entity's state, all in one binary string (little-endian), read by position and
-- rebuilt from runs of the old bytes and the parts that changed. It is:
--   byte 0xFE, u16 the layout's size in doubles (`size`: a value of another layout
--   reads as none), then each ring, then the other sections in the op's order.
-- Ring r: u16 k, the buckets it holds; when k > 1, its header [L, t1..tnc] (L the
-- newest bucket counted, t the running totals of buckets L-n+1..L); then its k records
-- (bucket, c1..cnc) in bucket order, only buckets inside the window: a card that paid
-- twice this week keeps 2 of its 28 slots, not 28. One record is its own header (the
-- totals are its counters, L its bucket), so it is stored once. A newer bucket first
-- drops (and subtracts) the records that leave the window, which are the first ones.
-- F: a double, M: 3 doubles, H: 25 doubles, K<k>: n (amounts ever written), then the
-- min(n, k) amounts of the ring (it grows to k, then the n-th amount takes slot n % k).
-- Then, where the entity has sets, each group of them (the distinct counts; the seen
-- sets and first uses): u16 its tag (the group's layout: a value without it, or with
-- another, has none yet), then per set u16 m and m members, each (double last seen,
-- [a first use's double: when its run of use began], u16 length, the member's bytes),
-- only those seen within the longest window (the rest are dropped as the set is written).
-- Values of the formats before (`size` doubles, a ring of n slots each; or those with
-- their zero runs cut out) are read and rewritten in this one (`from_plain`): an
-- upgrade starts no counter over (docs/operations.md, "Upgrading").

-- '<dd...d' for k doubles: one struct call reads or writes a whole record
-- (a wider record than these, which no layout has yet, gets its format made)
local FMT = {'<d', '<dd', '<ddd', '<dddd', '<ddddd', '<dddddd', '<ddddddd', '<dddddddd'}
local function fmt(k)
  local f = FMT[k]
  if not f then
    f = '<' .. string.rep('d', k)
    FMT[k] = f
  end
  return f
end
-- (constants are written out where used, not held in locals: each local a function
-- uses is an upvalue found anew each call, when the function is made)
--   '\254'                 the mark a value of this format starts with
--   '\0\0'                 a ring that holds no bucket (k = 0), a set with no member
--   '\0\0\0\0\0\0\240\63'   the double 1 (little-endian)

-- Runs of zero bytes are cuts of Z, grown by doubling as needed (string.rep builds
-- byte by byte); a cut of a length made before is found interned.
local Z = '\0\0\0\0\0\0\0\0'
local function zeros(n)
  while #Z < n do Z = Z .. Z end
  return ssub(Z, 1, n)
end

-- The entity's new value is built front to back from runs of the old value and
-- the parts that changed, then joined once. (One table of pieces serves every entity of
-- the call, read only up to `npieces`; sized up front: a table grown one item at a time
-- is rehashed at 1, 2, 4, 8, 16.)
local old, npieces, done
local pieces = {false, false, false, false, false, false, false, false,
                false, false, false, false, false, false, false, false,
                false, false, false, false, false, false, false, false}
local function keep(upto)  -- keep the old bytes up to offset `upto`
  if upto > done then
    npieces = npieces + 1
    pieces[npieces] = ssub(old, done + 1, upto)
    done = upto
  end
end
local function put(bytes)  -- new bytes at the current place (the caller moves `done` past what they replace)
  npieces = npieces + 1
  pieces[npieces] = bytes
end

-- A value of the format before with its runs of zero bytes cut out (values of at most
-- 1 kB were stored so): the number of runs (u16), each run's offset and length (u16,
-- u16), then the value's other bytes in order. Read only: it is rewritten as `size`
-- doubles, then in this format.
local function unsqueeze(value)
  local nr = sunpack('<H', value, 1)
  local parts, np = {}, 0
  local lit, got = 3 + 4 * nr, 0  -- the next literal byte; bytes of the value rebuilt
  for i = 0, nr - 1 do
    local start, len = sunpack('<HH', value, 3 + 4 * i)
    if start > got then
      np = np + 1
      parts[np] = ssub(value, lit, lit + start - got - 1)
      lit = lit + start - got
    end
    np = np + 1
    parts[np] = zeros(len)
    got = start + len
  end
  np = np + 1
  parts[np] = ssub(value, lit)
  return concat(parts, '', 1, np)
end

-- The value in this format of `plain`, `size` doubles laid out as before (a ring of n
-- slots each; all zeros: an entity never seen), the op's arguments from A[ai] on (its
-- rings, then its other sections) giving the layout.
local function from_plain(plain, size, ai, nrings)
  local parts, np = {'\254' .. spack('<H', size % 65536)}, 1
  local at = 0
  for _ = 1, nrings do
    local n, nc = A[ai], A[ai + 2]
    ai = ai + 3 + nc
    local w8 = (nc + 1) * 8
    local last = sunpack('<d', plain, at + 1)
    local recs = {}
    if last ~= 0 then
      for s = 0, n - 1 do
        local off = at + (1 + s) * w8
        local bucket = sunpack('<d', plain, off + 1)
        if bucket > last - n and bucket <= last then
          recs[#recs + 1] = {bucket, ssub(plain, off + 1, off + w8)}
        end
      end
      table.sort(recs, function(x, y) return x[1] < y[1] end)
    end
    np = np + 1
    if #recs == 0 then
      parts[np] = '\0\0'
    elseif #recs == 1 then
      parts[np] = '\1\0' .. recs[1][2]  -- its own header
    else
      parts[np] = spack('<H', #recs) .. ssub(plain, at + 1, at + w8)
      for i = 1, #recs do
        np = np + 1
        parts[np] = recs[i][2]
      end
    end
    at = at + (1 + n) * w8
  end
  for _ = 1, A[ai] do
    local code = A[ai + 1]
    ai = ai + 3
    local len = (code == 'F' and 8) or (code == 'M' and 24) or (code == 'H' and 200) or nil
    np = np + 1
    if len then
      parts[np] = ssub(plain, at + 1, at + len)
      at = at + len
    else
      local k = tonumber(ssub(code, 2))
      local n = sunpack('<d', plain, at + 1)
      parts[np] = ssub(plain, at + 1, at + 8 * (1 + math.min(n, k)))
      at = at + 8 * (k + 1)
    end
  end
  return concat(parts, '', 1, np)
end

-- The value of an entity never seen (or of another layout): what `from_plain` makes of
-- all zeros (every ring '\0\0': no bucket; F, M, H, K<k> zeros), without reading them.
local function empty(size, ai, nrings)
  for _ = 1, nrings do ai = ai + 3 + A[ai + 2] end
  local len = 2 * nrings
  for _ = 1, A[ai] do
    local code = A[ai + 1]
    ai = ai + 3
    len = len + ((code == 'M' and 24) or (code == 'H' and 200) or 8)  -- K<k>: n = 0, no amounts
  end
  return '\254' .. spack('<H', size % 65536) .. zeros(len)
end

-- A group of an entity's sets, in its state value from byte offset `at` (see above),
-- with the op's arguments from A[ai] on (tag nsets, then per set: kind member legacy
-- nthr thr1..thrn): puts the set's values in `out` after `no` and the group rewritten in
-- `pieces` when the event counts in a set (`sets_changed`). Kinds: 0/1 a distinct count
-- (read / read and write) -> a count per threshold; 2/3 seen (`d.SeenBefore`) ->
-- whether the member is new (false: no member), the members seen since the threshold;
-- 4/5 first use (`d.MemberFirstSeen`, records also hold when the member's run of use
-- began) -> that time, 0 if none in the window, false: no member. A value without the
-- group (written by a version before, or another layout) reads each set from the key
-- it was kept in before (`legacy`: a sorted set, or for a first use "<hash>#<field
-- prefix>"), once, and the group is written with the value whenever the value is
-- written: an entity already in this format pays no read of the formats before (an
-- entity without a value pays one EXISTS over all its groups' keys, in fresh_state: keys
-- of before may outlive its value by a day; it comes here, one EXISTS per group, only if
-- one exists). Returns the next argument's index, `no`, and where the group ends in the old value.
local sets_changed
-- (one set of tables for every set of the call, read only up to the set's count: a
-- table made per set cost more than the set's own work)
local SEEN, AT1, FIRST = {}, {}, {}
local function state_sets(key, ai, no, at, ts)
  local tag, nsets = A[ai], A[ai + 1]
  ai = ai + 2
  local has = #old >= at + 2 and sunpack('<H', old, at + 1) == tag
  local pos = at + 3  -- where the next set starts (1-based)
  local write = false
  local base, before  -- the entity's keys' common start; whether any key of before exists
  local hashes  -- the first uses' hashes of before, each read once
  if not has then
    base = ssub(key, 1, #key - 14)  -- (key: "...:state.<8 hex>")
    local names, j = {}, ai
    for s = 1, nsets do
      local legacy = A[j + 2]
      local cut = string.find(legacy, '#', 1, true)
      names[s] = base .. (cut and ssub(legacy, 1, cut - 1) or legacy)
      j = j + 4 + A[j + 3]
    end
    before = rcall('EXISTS', unpack(names, 1, nsets)) > 0  -- one call for all, not a read each
    if before then hashes = {} end
    keep(at)
    put(spack('<H', tag))  -- the group, new: its sets follow
  end
  for _ = 1, nsets do
    local kind, member, legacy, nthr = A[ai], A[ai + 1], A[ai + 2], A[ai + 3]
    local t0 = ai + 4
    ai = t0 + nthr
    local counts = kind < 4  -- records (last seen, length, member); a first use's also have (first use)
    local rw = counts and 10 or 18  -- a record's bytes before the member's
    local put_member = kind % 2 == 1 and member ~= ''
    -- seen[k]: when member k was last seen; at1[k]: where its record starts (has), or
    -- the member itself (read from the key of before); first[k]: its run's start (kind 4/5)
    local seen, at1, first, n = SEEN, AT1, FIRST, 0
    local start, mine = pos, nil  -- mine: the event's member's index
    local low
    if has or before then  -- (a set with no member yet needs no threshold: every count is 0)
      for i = t0, ai - 1 do
        local thr = tonumber(A[i])  -- (a number; text from a client before)
        A[i] = thr
        if not low or thr < low then low = thr end
      end
    end
    local stale = false  -- a member last seen before the longest window (dropped as the set is written)
    if has then
      local m = sunpack('<H', old, pos)
      pos = pos + 2
      local mlen = #member
      for k = 1, m do
        local t, len, q
        if counts then
          t, len, q = sunpack('<dH', old, pos)
        else
          t, first[k], len, q = sunpack('<ddH', old, pos)
        end
        seen[k], at1[k] = t, pos
        if t < low then stale = true end
        if len == mlen and not mine and ssub(old, q, q + len - 1) == member then mine = k end
        pos = q + len
      end
      n = m
    elseif before and counts then
      local z = rcall('ZRANGE', base .. legacy, 0, -1, 'WITHSCORES')
      for k = 1, #z, 2 do
        n = n + 1
        seen[n], at1[n] = tonumber(z[k + 1]), z[k]
        if z[k] == member then mine = n end
      end
    elseif before then
      local cut = string.find(legacy, '#', 1, true)
      local name, prefix = ssub(legacy, 1, cut - 1), ssub(legacy, cut + 1)
      local all = hashes[name]
      if not all then
        all = rcall('HGETALL', base .. name)
        hashes[name] = all
      end
      local plen = #prefix
      for k = 1, #all, 2 do
        local field = all[k]
        if ssub(field, 1, plen) == prefix then
          n = n + 1
          first[n], seen[n] = sunpack('<dd', all[k + 1])
          at1[n] = ssub(field, plen + 1)
          if at1[n] == member then mine = n end
        end
      end
    end
    if not has then stale = true end  -- written in this format
    local hit = mine and seen[mine] >= low  -- the member was seen inside the window
    if kind >= 4 then
      no = no + 1
      out[no] = member ~= '' and (hit and first[mine] or 0)
    else
      if kind >= 2 then
        no = no + 1
        out[no] = member ~= '' and (hit and 0 or 1)
      end
      for i = t0, ai - 1 do
        local thr, c = A[i], 0
        for k = 1, n do
          if seen[k] >= thr then c = c + 1 end
        end
        no = no + 1
        out[no] = c
      end
    end
    -- the new bytes go straight into the value's pieces (`keep`, `put`): the old bytes of
    -- a set that does not change are copied once, when the value is joined
    if put_member and not stale then
      -- the records as they are, the event's member's time moved on or its record added
      if mine then
        if ts > seen[mine] then
          local r = at1[mine]
          keep(r - 1)
          put(spack('<d', ts))
          done = r + 7
          write = true
        end
      else
        keep(start - 1)
        put(spack('<H', n + 1))
        done = start + 1
        keep(pos - 1)
        put(counts and spack('<dH', ts, #member) .. member or spack('<ddH', ts, ts, #member) .. member)
        write = true
      end
    elseif (put_member or not has) and n == 0 then
      -- no member yet (a new entity's set): the event's alone, or none, with no scratch table
      if has then keep(start - 1) end
      if not put_member then
        put('\0\0')
      elseif counts then
        put('\1\0' .. spack('<dH', ts, #member) .. member)
        write = true
      else
        put('\1\0' .. spack('<ddH', ts, ts, #member) .. member)
        write = true
      end
      if has then done = pos - 1 end
    elseif put_member or not has then
      -- the members still inside the longest window, the event's last seen at ts
      local buf, nb = {}, 0
      for k = 1, n do
        if seen[k] >= low and not (put_member and k == mine) then
          local text = at1[k]
          nb = nb + 1
          if has then
            local len = sunpack('<H', old, text + rw - 2)
            buf[nb] = ssub(old, text, text + rw + len - 1)
          elseif counts then
            buf[nb] = spack('<dH', seen[k], #text) .. text
          else
            buf[nb] = spack('<ddH', seen[k], first[k], #text) .. text
          end
        end
      end
      if put_member then
        local last = hit and seen[mine] > ts and seen[mine] or ts
        nb = nb + 1
        if counts then
          buf[nb] = spack('<dH', last, #member) .. member
        else
          buf[nb] = spack('<ddH', last, hit and first[mine] or ts, #member) .. member
        end
        write = true
      end
      if has then keep(start - 1) end
      put(spack('<H', nb) .. concat(buf, '', 1, nb))
      if has then done = pos - 1 end
    end
  end
  local ends = has and pos - 1 or at
  -- a group of before (or none) is written in this format with the value, whenever the
  -- value is written: with its sets of before now, even if the event counts in none
  if write or (before and not has) then sets_changed = true end
  return ai, no, ends
end

-- An entity with no value (or one of another layout) and no key of the formats before:
-- every read is 0 (or false), and its new value is made from the event alone, one piece
-- per section, joined once -- the bytes and reads the general path (op_state, below)
-- makes of `empty`'s zeros, without reading them. Most entities of a payment (its card,
-- device, IP, subnet) are new ones. Returns false, having written nothing, when a key
-- of the formats before exists: the general path reads it.
-- a ring holding one record (its own header): '<H' (1) then the record's doubles
-- An empty ring's reading (a new entity's, or one with no bucket yet): its nc totals, all
-- 0, go in `out` after `no`; answers whether the event counts in the ring (its increments
-- from A[i0 + 1] on, the near-limit flag "N" resolved in place). fresh_state and op_state
-- both read an empty ring so.
local function empty_ring(i0, nc, no)
  local any = false
  for i = 1, nc do
    local inc = A[i0 + i]
    if inc == 'N' then
      inc = near
      A[i0 + i] = inc
    end
    if inc ~= 0 then any = true end
    out[no + i] = 0
  end
  return any
end

local HFMT = {'<Hd', '<Hdd', '<Hddd', '<Hdddd', '<Hddddd', '<Hdddddd', '<Hddddddd', '<Hdddddddd'}
-- (NAMES and FRESH are read up to their counts; sized up front, as `pieces` is)
local NAMES = {false, false, false, false, false, false, false, false}  -- the keys of before of one entity
local LEGACY = {}  -- each legacy name's key part
local FRESH = {false, false, false, false, false, false, false, false,  -- the new value's pieces
               false, false, false, false, false, false, false, false,
               false, false, false, false, false, false, false, false,
               false, false, false, false, false, false, false, false}
local function fresh_state(key, ai, size, nrings)
  local P, np = FRESH, 2
  P[1], P[2] = '\254', spack('<H', size % 65536)
  local A, out, no = A, out, nout
  local changed = false
  for _ = 1, nrings do
    local b, nc = A[ai + 1], A[ai + 2]
    local i0 = ai + 2  -- A[i0 + i] increments counter i
    ai = i0 + nc + 1
    local any = empty_ring(i0, nc, no)
    no = no + nc
    np = np + 1
    if any then
      P[np] = spack(HFMT[nc + 1] or '<H' .. ssub(fmt(nc + 1), 2), 1, b, unpack(A, i0 + 1, i0 + nc))
      changed = true
    else
      P[np] = '\0\0'
    end
  end
  local nextra = A[ai]
  ai = ai + 1
  for _ = 1, nextra do
    local code, write, value = A[ai], A[ai + 1] == 2, A[ai + 2]
    ai = ai + 3
    np = np + 1
    if code == 'F' then
      no = no + 1
      out[no] = false
      P[np] = write and spack('<d', value) or '\0\0\0\0\0\0\0\0'
    elseif code == 'M' then
      out[no + 1], out[no + 2], out[no + 3] = 0, 0, 0
      no = no + 3
      if write then  -- (op_state's update of n = mean = m2 = 0)
        local delta = value - 0
        local mean = 0 + delta / 1
        P[np] = spack('<ddd', 1, mean, 0 + delta * (value - mean))
      else
        P[np] = zeros(24)
      end
    elseif code ~= 'H' then
      local k = tonumber(ssub(code, 2))  -- K<k>: no amount yet, then k empty slots
      local last = no + k + 1
      for i = no + 1, last do out[i] = 0 end
      no = last
      P[np] = write and spack('<dd', 1, value) or '\0\0\0\0\0\0\0\0'
    else
      out[no + 1], out[no + 2] = 0, 0
      no = no + 2
      if write then  -- the hour's count and the total, 1 each
        local one = '\0\0\0\0\0\0\240\63'
        P[np], P[np + 1], P[np + 2], P[np + 3] = zeros(value * 8), one, zeros(184 - value * 8), one
        np = np + 3
      else
        P[np] = zeros(200)
      end
    end
    if write then changed = true end
  end
  local ngroups = A[ai]
  ai = ai + 1
  if ngroups > 0 then
    local ts = A[ai]
    ai = ai + 1
    -- one EXISTS over the keys of before of all the entity's sets (see state_sets; the
    -- first uses of one set of columns share a hash: named once)
    local base, names, nn, j = ssub(key, 1, #key - 14), NAMES, 0, ai
    local last
    for _ = 1, ngroups do
      local nsets = A[j + 1]
      j = j + 2
      for _ = 1, nsets do
        local legacy = A[j + 2]
        local part = legacy  -- a sorted set's name; a first use's (kind 4/5) is "<hash>#<field prefix>"
        if A[j] >= 4 then
          part = LEGACY[legacy]
          if not part then
            part = ssub(legacy, 1, string.find(legacy, '#', 1, true) - 1)
            LEGACY[legacy] = part
          end
        end
        if part ~= last then
          nn = nn + 1
          names[nn] = base .. part
          last = part
        end
        j = j + 4 + A[j + 3]
      end
    end
    if rcall('EXISTS', unpack(names, 1, nn)) > 0 then return false end
    for _ = 1, ngroups do
      local tag, nsets = A[ai], A[ai + 1]
      ai = ai + 2
      np = np + 1
      P[np] = spack('<H', tag)
      for _ = 1, nsets do
        local kind, member, nthr = A[ai], A[ai + 1], A[ai + 3]
        ai = ai + 4 + nthr
        if kind >= 4 then
          no = no + 1
          out[no] = member ~= '' and 0
        else
          if kind >= 2 then
            no = no + 1
            out[no] = member ~= '' and 1
          end
          for i = no + 1, no + nthr do out[i] = 0 end
          no = no + nthr
        end
        np = np + 1
        if kind % 2 == 0 or member == '' then
          P[np] = '\0\0'
        else  -- the set's one record: the event's member
          P[np] = kind < 4 and spack('<HdH', 1, ts, #member) or spack('<HddH', 1, ts, ts, #member)
          np = np + 1
          P[np] = member
          changed = true
        end
      end
    end
  end
  local ttl = A[ai]
  argi, nout = ai + 1, no
  if changed then
    -- GET: the reply is nil (or the value of another layout), where a plain SET's "OK"
    -- would cost Lua a table
    rcall('SET', key, concat(P, '', 1, np), 'EX', ttl, 'GET')
  end
  return true
end

local function op_state(key)
  local size, nrings = A[argi], A[argi + 1]
  argi = argi + 2
  local value = rcall('GET', key)
  local fresh = not value
  if value and sbyte(value, 1) == 254 then
    if sunpack('<H', value, 2) ~= size % 65536 then value, fresh = nil, true end  -- another layout
  elseif value then
    -- the format before: plain doubles, or those with zero runs cut out (shorter)
    if #value < size * 8 then value = unsqueeze(value) end
    if #value == size * 8 then value = from_plain(value, size, argi, nrings) else value, fresh = nil, true end
  end
  if not value then
    if fresh_state(key, argi, size, nrings) then return end
    -- none yet, or one of another layout, with keys of before: read as all zeros (every
    -- total 0, no first seen, no moments), so one code path serves new and known
    -- entities alike
    value = empty(size, argi, nrings)
  end
  old = value
  npieces, done = 0, 0
  -- the shared state in locals, written back at the end: Lua reads a local with no
  -- instruction, an upvalue with one
  local A, out, old, sunpack, spack = A, out, old, sunpack, spack
  local ai, no = argi, nout
  local changed = false
  sets_changed = false
  local at = 3  -- byte offset of the current section
  for _ = 1, nrings do
    local n, b, nc = A[ai], A[ai + 1], A[ai + 2]
    local i0 = ai + 2  -- A[i0 + i] increments counter i
    ai = i0 + nc + 1
    local width = nc + 1
    local w8 = width * 8
    local f = FMT[width] or fmt(width)
    local k = sunpack('<H', old, at + 1)
    if k == 0 then
      -- an empty ring (a new entity's): every total 0; the event's bucket, if the ring
      -- counts it, is its one record (its own header), with no scratch table
      local any = empty_ring(i0, nc, no)
      no = no + nc
      if any then
        keep(at)
        put('\1\0' .. spack(f, b, unpack(A, i0 + 1, i0 + nc)))
        done = at + 2
        changed = true
      end
      at = at + 2
    else
      local rstart = at + 2 + (k > 1 and w8 or 0)  -- offset of the first record
      local send = rstart + k * w8  -- offset past the section
      -- the header: t[1] = L, t[1 + i] = total i
      local t = {sunpack(f, old, at + 3)}
      local last = t[1]
      local reset = last == 0 or b - last >= n
      local advance = not reset and b > last  -- buckets up to b - n leave the window
      local any = false
      -- each total is read as it stands before the event, then the event's increment
      -- is added (the header written if the ring counts the event)
      for i = 2, width do
        local inc = A[i0 + i - 1]
        if inc == 'N' then
          inc = near
          A[i0 + i - 1] = inc
        end
        if inc ~= 0 then any = true end
        if reset then t[i] = 0 end
        if not advance then
          no = no + 1
          out[no] = t[i]
          t[i] = t[i] + inc
        end
      end
      local drop = 0  -- the first records, that leave the window
      if advance then
        local bound = b - n
        while drop < k do
          local off = rstart + drop * w8 + 1
          if sunpack('<d', old, off) > bound then break end
          local rec = {sunpack(f, old, off)}
          for i = 2, width do t[i] = t[i] - rec[i] end
          drop = drop + 1
        end
        for i = 2, width do
          no = no + 1
          out[no] = t[i]
          t[i] = t[i] + A[i0 + i - 1]
        end
      end
      if any and (reset or b > last - n) then
        keep(at)
        if reset or b > last then
          t[1] = b
          local kept = reset and 0 or k - drop
          if kept == 0 then
            put('\1\0' .. spack(f, unpack(t, 1, width)))  -- the one record is the header
          else
            put(spack('<H', kept + 1) .. spack(f, unpack(t, 1, width)) .. ssub(old, rstart + drop * w8 + 1, send)
                .. spack(f, b, unpack(A, i0 + 1, i0 + nc)))
          end
        else
          -- an older bucket still in the window: add to its record, or insert one in order
          local j = k  -- records 1..j are the ones of buckets up to b
          local bj = sunpack('<d', old, rstart + (j - 1) * w8 + 1)
          while bj > b and j > 1 do
            j = j - 1
            bj = sunpack('<d', old, rstart + (j - 1) * w8 + 1)
          end
          if bj > b then j = 0 end
          local cut = rstart + j * w8  -- where the records after b's begin
          if k == 1 and bj == b then
            put('\1\0' .. spack(f, unpack(t, 1, width)))  -- the one record is the header
          elseif j > 0 and bj == b then
            local cur = {sunpack(f, old, cut - w8 + 1)}
            for i = 2, width do cur[i] = cur[i] + A[i0 + i - 1] end
            put(ssub(old, at + 1, at + 2) .. spack(f, unpack(t, 1, width)) .. ssub(old, rstart + 1, cut - w8)
                .. spack(f, unpack(cur, 1, width)))
          else
            put(spack('<H', k + 1) .. spack(f, unpack(t, 1, width)) .. ssub(old, rstart + 1, cut)
                .. spack(f, b, unpack(A, i0 + 1, i0 + nc)))
          end
          if cut < send then put(ssub(old, cut + 1, send)) end
        end
        done = send
        changed = true
      end
      at = send
    end
  end
  -- then the entity's other sections: F (first seen), M (Welford moments of the
  -- amount), H (hour-of-day counts, then their total), K<k> (how many amounts were
  -- written, then the ring of the last k); each: code, mode (1 read, 2 read and
  -- write), value
  local nextra = A[ai]
  ai = ai + 1
  for _ = 1, nextra do
    local code, write, value = A[ai], A[ai + 1] == 2, A[ai + 2]
    ai = ai + 3
    if code == 'F' then
      local first = sunpack('<d', old, at + 1)
      no = no + 1
      out[no] = first ~= 0 and first or false
      if write and first == 0 then
        keep(at)
        put(spack('<d', value))
        done = at + 8
        changed = true
      end
      at = at + 8
    elseif code == 'M' then
      local n, mean, m2 = sunpack('<ddd', old, at + 1)
      out[no + 1], out[no + 2], out[no + 3] = n, mean, m2
      no = no + 3
      if write then
        n = n + 1
        local delta = value - mean
        mean = mean + delta / n
        m2 = m2 + delta * (value - mean)
        keep(at)
        put(spack('<ddd', n, mean, m2))
        done = at + 24
        changed = true
      end
      at = at + 24
    elseif code ~= 'H' then
      -- K<k>: the ring's slot n % k takes the n-th amount (n counted from 0); it
      -- holds min(n, k) slots, the others read as 0
      local k = tonumber(ssub(code, 2))
      local n = sunpack('<d', old, at + 1)
      local m = n < k and n or k
      out[no + 1] = n
      if m > 0 then
        local vals = {sunpack(fmt(m), old, at + 9)}
        for i = 1, m do out[no + 1 + i] = vals[i] end
      end
      for i = no + 2 + m, no + 1 + k do out[i] = 0 end
      no = no + k + 1
      if write then
        keep(at)
        put(spack('<d', n + 1))
        done = at + 8
        if n < k then
          keep(at + 8 + n * 8)  -- the ring grows by one slot
        else
          keep(at + 8 + (n % k) * 8)
          done = done + 8
        end
        put(spack('<d', value))
        changed = true
      end
      at = at + 8 + m * 8
    else
      local count = sunpack('<d', old, at + value * 8 + 1)
      local total = sunpack('<d', old, at + 24 * 8 + 1)
      out[no + 1], out[no + 2] = count, total
      no = no + 2
      if write then
        keep(at + value * 8)
        put(spack('<d', count + 1))
        done = done + 8
        keep(at + 24 * 8)
        put(spack('<d', total + 1))
        done = done + 8
        changed = true
      end
      at = at + 25 * 8
    end
  end
  local ngroups = A[ai]
  ai = ai + 1
  if ngroups > 0 then
    local ts = A[ai]
    ai = ai + 1
    for _ = 1, ngroups do
      ai, no, at = state_sets(key, ai, no, at, ts)
    end
    keep(at)
    done = #old  -- bytes past the last group (of a layout before) are dropped
  end
  local ttl = A[ai]
  argi, nout = ai + 1, no
  if changed or sets_changed then
    keep(#old)
    local new = concat(pieces, '', 1, npieces)
    if fresh then
      -- GET: the reply is nil (or the old value of another layout), where a plain
      -- SET's "OK" would cost Lua a table
      rcall('SET', key, new, 'EX', ttl, 'GET')
    else
      rcall('SET', key, new, 'EX', ttl)
    end
  end
end

-- D keeps a sorted set of members scored by when each was last seen. An op
-- that counts the event refreshes the key's TTL first, and EXPIRE's answer says
-- whether the key exists: a missing key needs no reads (every count is 0) and no
-- pruning (its one member is the new one), only the write and its TTL. An existing
-- key ends with the same TTL as if it were refreshed after the write: ZADD keeps a
-- key's TTL, and the prune never empties the set (the new member is at or after
-- the bound, which is never past a threshold, and a threshold never past ts).
-- Counting a member as seen at ts: only a new member grows the set, so that is
-- when members last seen before the prune bound are dropped.
local function op_distinct(key)
  local member, ts, prune, ttl, nthr = A[argi], A[argi + 1], A[argi + 2], A[argi + 3], A[argi + 4]
  local first = argi + 5
  argi = first + nthr
  local write = member ~= ''
  if write and rcall('EXPIRE', key, ttl) == 0 then
    for _ = 1, nthr do
      nout = nout + 1
      out[nout] = 0
    end
    rcall('ZADD', key, 'GT', ts, member)
    rcall('EXPIRE', key, ttl)
    return
  end
  if nthr == 1 then
    nout = nout + 1
    out[nout] = rcall('ZCOUNT', key, A[first], '+inf')
  else
    -- the prune bound is the lowest threshold (exclusive): no member at or after
    -- it, none in any window
    local low = prune
    if sbyte(low, 1) == 40 then low = ssub(low, 2) end  -- "(thr"
    local n = rcall('ZCOUNT', key, low, '+inf')
    for i = first, argi - 1 do
      local thr = A[i]
      nout = nout + 1
      if n == 0 or thr == low then
        out[nout] = n
      else
        out[nout] = rcall('ZCOUNT', key, thr, '+inf')
      end
    end
  end
  if write and rcall('ZADD', key, 'GT', ts, member) == 1 then
    rcall('ZREMRANGEBYSCORE', key, '-inf', prune)
  end
end

-- Merchant period volume. Fields of the merchant's volume hash:
--   f         first local day with a payment
--   cd        the open day: the latest day with a payment
--   V / C     volume and count of the open day; v:h / c:h the same per hour
--   P:d       closed day d packed as 72 little-endian doubles (576 bytes; 72 numbers of
--             15 digits each, 1,080 bytes, in the format before, still read): the volume through
--             each hour (cumulative), each hour's own volume, the cumulative count
--   B:h       baseline cache for hour h: "day bt7 bh7 bc7 bt28 bh28 bc28"
-- Closing a day packs its hours once; a baseline is computed once per merchant
-- and hour from the packs of the 28 previous days (read by position, no parsing).

local function close_day(key, cd, day)
  local fields = {}
  for h = 0, 23 do
    fields[#fields + 1] = 'v:' .. h
    fields[#fields + 1] = 'c:' .. h
  end
  local vals = rcall('HMGET', key, unpack(fields))
  local nums = {}  -- the volume through each hour, each hour's own, the count through each
  local cv, cc = 0, 0
  for h = 0, 23 do
    local v = tonumber(vals[2 * h + 1] or '0')
    cv = cv + v
    cc = cc + tonumber(vals[2 * h + 2] or '0')
    nums[h + 1], nums[h + 25], nums[h + 49] = cv, v, cc
  end
  fields[#fields + 1] = 'V'
  fields[#fields + 1] = 'C'
  -- the packs of days that no baseline will read again (28 days back from `day`)
  for d = math.max(cd - 28, day - 60), day - 29 do
    fields[#fields + 1] = 'P:' .. d
  end
  rcall('HDEL', key, unpack(fields))
  if cv > 0 or cc > 0 then
    local f24 = '<' .. string.rep('d', 24)
    rcall('HSET', key, 'P:' .. cd, spack(f24, unpack(nums, 1, 24)) .. spack(f24, unpack(nums, 25, 48))
      .. spack(f24, unpack(nums, 49, 72)))
  end
end

-- the baselines of `hour` on `day` (false where the merchant is too new for one),
-- cached in field `bfield` as "day bt7 bh7 bc7 bt28 bh28 bc28" ("-" for false)
local function baselines(key, day, hour, bfield, first)
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
  -- the i-th of a pack's numbers (a double; 15 digits in a pack of the format before)
  local function packed_at(p, i)
    if #p == 1080 then return tonumber(ssub(p, i * 15 + 1, i * 15 + 15)) end
    return (sunpack('<d', p, i * 8 + 1))
  end
  local age = first and day - first or -1
  local span = (age >= 28 and 28) or (age >= 7 and 7) or 0
  local base = {false, false, false, false, false, false}
  if span > 0 then
    local fields = {}
    for k = 1, span do fields[k] = string.format('P:%d', day - k) end
    local packs = rcall('HMGET', key, unpack(fields))
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
    rcall('HSET', key, bfield, table.concat(text, ' '))
  end
  return base
end

-- A count or a volume for Redis, as the decimal text Redis would make of the number
-- ("%.17g"): a whole number below 2^53 is formatted as an integer (the same digits,
-- without printf's floating-point conversion), anything else as "%.17g".
local function decimal(x)
  if x > 0 and x < 9007199254740992 and x % 1 == 0 then return sformat('%d', x) end
  return sformat('%.17g', x)
end

local function op_volume(key)
  local day, hour, amt, ttl, write = A[argi], A[argi + 1], A[argi + 2], A[argi + 3], A[argi + 4] == 1
  argi = argi + 5
  local vfield, cfield, bfield = 'v:' .. hour, 'c:' .. hour, 'B:' .. hour
  local r = rcall('HMGET', key, 'f', 'cd', 'V', 'C', vfield, cfield, bfield)
  local first = r[1] and tonumber(r[1]) or nil
  local cd = r[2] and tonumber(r[2]) or nil
  if cd and day < cd then
    -- an event older than the merchant's open day: it neither reads nor
    -- revises the frozen volumes of a past day
    for i = nout + 1, nout + 4 do out[i] = 0 end
    for i = nout + 5, nout + 10 do out[i] = false end
    nout = nout + 10
    return
  end
  if cd and day > cd then
    close_day(key, cd, day)
    r[3], r[4], r[5], r[6] = false, false, false, false
  end
  local v, c, vh, ch = tonumber(r[3] or '0'), tonumber(r[4] or '0'), tonumber(r[5] or '0'), tonumber(r[6] or '0')
  out[nout + 1], out[nout + 2], out[nout + 3], out[nout + 4] = v, c, vh, ch
  nout = nout + 4
  local cached = {}
  if r[7] then
    cached = {string.match(r[7], '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')}
  end
  if tonumber(cached[1]) == day then
    for i = 2, 7 do
      nout = nout + 1
      if cached[i] == '-' then out[nout] = false else out[nout] = tonumber(cached[i]) or false end
    end
  else
    local base = baselines(key, day, tonumber(hour), bfield, first)
    for i = 1, 6 do out[nout + i] = base[i] end
    nout = nout + 6
  end
  if write then
    -- the four totals were just read: one HSET writes them all (and f, cd if new)
    local set = {'V', decimal(v + amt), 'C', decimal(c + 1),
                 vfield, decimal(vh + amt), cfield, decimal(ch + 1), false, false, false, false}
    local ns = 8
    if not first then set[9], set[10], ns = 'f', decimal(day), 10 end
    if cd ~= day then set[ns + 1], set[ns + 2], ns = 'cd', decimal(day), ns + 2 end
    rcall('HSET', key, unpack(set, 1, ns))
    -- the TTL is refreshed by a merchant's first payment of each business day (a new
    -- hash's too), not by every payment: it is a day longer than the reads need
    if cd ~= day then rcall('EXPIRE', key, ttl) end
  elseif cd and day > cd then
    rcall('HSET', key, 'cd', day)
  end
end

local function op_top(key)
  local member, amt, ttl, write = A[argi], A[argi + 1], A[argi + 2], A[argi + 3] == 1
  argi = argi + 4
  local top = rcall('ZREVRANGE', key, '0', '0', 'WITHSCORES')
  nout = nout + 1
  out[nout] = top[2] and tonumber(top[2]) or 0
  if write and member ~= '' then
    rcall('ZINCRBY', key, amt, member)
    -- the TTL is set when the day's set is made (it was empty: no key), as op_makeup's
    if not top[1] then rcall('EXPIRE', key, ttl) end
  end
end

local function op_makeup(key)
  local ts, within, day, ttl, write = A[argi], A[argi + 1], A[argi + 2], A[argi + 3], A[argi + 4] == 1
  local ca, ua, pa = A[argi + 5], A[argi + 6], A[argi + 7]
  argi = argi + 8
  local r = rcall('HMGET', key, 'c', 'u', 'r')
  local c, u, n = tonumber(r[1] or '0'), tonumber(r[2] or '0'), tonumber(r[3] or '0')
  out[nout + 1], out[nout + 2], out[nout + 3] = c, u, n
  nout = nout + 3
  if not write or ca < 0 or ua < 0 or pa < 0 then return end
  -- read before the event: false = never seen (new); fengkong/features/makeup.py says the same
  local cf, uf, pf = ca > 0 and out[ca], ua > 0 and out[ua], pa > 0 and out[pa]
  -- the counts were just read: one HSET writes the new ones (not an HINCRBY per count)
  local set, ns = {false, false, false, false, false, false}, 0
  if ca > 0 and (not cf or ts - cf < within) then set[ns + 1], set[ns + 2], ns = 'c', decimal(c + 1), ns + 2 end
  if ua > 0 and (not uf or ts - uf < within) then set[ns + 1], set[ns + 2], ns = 'u', decimal(u + 1), ns + 2 end
  if pf and pf < day then set[ns + 1], set[ns + 2], ns = 'r', decimal(n + 1), ns + 2 end
  if ns > 0 then
    rcall('HSET', key, unpack(set, 1, ns))
    -- the TTL is set when the day's hash is made (no count yet: no key), not on every
    -- payment: the hash is read by its own business day only, which its TTL outlasts
    if c + u + n == 0 then rcall('EXPIRE', key, ttl) end
  end
end

local function op_list(key)
  -- the list ops come last, one after another: this call runs them all (no dispatch
  -- each), with the shared state in locals
  local A, out, keys, ai, no = A, out, KEYS, argi, nout
  while true do
    local kidx, member, ipint = A[ai], A[ai + 1], A[ai + 2]
    ai = ai + 3
    local hit = rcall('SISMEMBER', key, member)
    if hit == 0 and kidx > 0 and ipint ~= '' then
      -- ranges are stored as members "start:end" scored by their start address
      local r = rcall('ZREVRANGEBYSCORE', keys[kidx], ipint, '-inf', 'LIMIT', '0', '1')
      if r[1] then
        local sep = string.find(r[1], ':', 1, true)
        if tonumber(ssub(r[1], sep + 1)) >= tonumber(ipint) then hit = 1 end
      end
    end
    no = no + 1
    out[no] = hit
    if A[ai] ~= 'L' then break end
    key = keys[A[ai + 1]]
    ai = ai + 2
  end
  argi, nout = ai, no
end

-- the function of each opcode (fengkong/features/ops.py: each Op class names its own)
return {
  P = op_profile,
  R = op_state,
  D = op_distinct,
  V = op_volume,
  T = op_top,
  C = op_makeup,
  L = op_list,
}
end)()  -- (OPS)

local nargs, keys = #A, KEYS
while argi <= nargs do
  local code = A[argi]
  local op = OPS[code]
  if not op then error('unknown op ' .. tostring(code)) end
  local key = keys[A[argi + 1]]
  argi = argi + 2
  op(key)
end

local blob = cmsgpack.pack(out)
if dedup then
  rcall('SET', dedup, blob, 'EX', ARGV[1], 'GET')  -- nil, as read above (see op_state)
end
return {'ok', blob}
