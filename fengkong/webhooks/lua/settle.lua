-- settle.lua: record the result of one delivery attempt.
--
-- KEYS[1]  the retry schedule (sorted set)
-- KEYS[2]  the delivery hash
-- KEYS[3]  the subscription's stats hash
-- KEYS[4]  the subscription's dead-letter stream
-- ARGV[1]  the delivery id
-- ARGV[2]  the outcome: "ok" (2xx), "retry" (again at ARGV[6]) or "dead" (dead-letter it)
-- ARGV[3]  the HTTP status (0: no answer)
-- ARGV[4]  the error ("" on success)
-- ARGV[5]  now (unix seconds)
-- ARGV[6]  when to try again (unix seconds; "retry" only)
-- ARGV[7]  the dead-letter stream's cap (XADD MAXLEN ~)
-- Stats fields: delivered, failed (failed attempts), dead_lettered, last_status,
-- last_error, last_attempt_at. Returns 0 when the delivery was settled already (a
-- worker whose lease ran out raced another: its result is not counted twice), else 1.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local outcome = ARGV[2]
redis.call('HSET', KEYS[3], 'last_status', ARGV[3], 'last_error', ARGV[4], 'last_attempt_at', ARGV[5])
if outcome == 'ok' then
  redis.call('HINCRBY', KEYS[3], 'delivered', 1)
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('HINCRBY', KEYS[3], 'failed', 1)
local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
if outcome == 'retry' then
  redis.call('HSET', KEYS[2], 'last_status', ARGV[3], 'last_error', ARGV[4])
  redis.call('ZADD', KEYS[1], ARGV[6], ARGV[1])
  return 1
end
local d = redis.call('HMGET', KEYS[2], 'sub', 'event', 'kind', 'body', 'created_at')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'delivery', ARGV[1], 'sub', d[1], 'event', d[2],
           'kind', d[3], 'body', d[4], 'created_at', d[5], 'attempts', attempts, 'last_status', ARGV[3],
           'last_error', ARGV[4], 'dead_at', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
