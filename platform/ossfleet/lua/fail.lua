-- fail: a leased request failed. Retry it after a backoff while attempts
-- remain and the error is retryable; otherwise dead-letter it, refund its
-- reservation and end its stream with the error.
-- ARGV: P id owner error retryable now_ms max_attempts backoff_ms stream_ttl_s
-- Returns {'RETRY', due_ms} | {'DEAD'} | {'LOST', state}
local id, owner, err = ARGV[2], ARGV[3], ARGV[4]
local retryable, now = ARGV[5] == '1', tonumber(ARGV[6])
local max_attempts, backoff = tonumber(ARGV[7]), tonumber(ARGV[8])
local r = k('req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'model', 'attempts', 'cancel')
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local model, attempts = f[3], tonumber(f[4])
redis.call('ZREM', k('leases', model), id)
redis.call('HSET', r, 'error', err)
if retryable and attempts < max_attempts and f[5] ~= '1' then
  local due = now + backoff * 2 ^ (attempts - 1)
  redis.call('HSET', r, 'state', 'delayed', 'owner', '')
  redis.call('ZADD', k('delayed', model), due, id)
  return {'RETRY', tostring(due)}
end
redis.call('HSET', r, 'state', 'dead', 'owner', '', 'done_ms', now)
redis.call('ZADD', k('dead', model), now, id)
refund(id)
finish_stream(id, tonumber(ARGV[9]), 'type', 'error', 'error', err, 'attempts', tostring(attempts))
return {'DEAD'}
