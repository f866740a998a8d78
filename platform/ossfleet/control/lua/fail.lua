-- fail: a leased request failed. Retry it after a backoff while attempts
-- remain and the error is retryable; otherwise dead-letter it, refund its
-- reservation and end its stream with the error.
-- ARGV: P model id owner error retryable now_ms max_attempts backoff_ms stream_ttl_s [status]
-- status: the HTTP status the error is the caller's (400: the request itself cannot be served), '' none.
-- Returns {'RETRY', due_ms} | {'DEAD', tenant} | {'LOST', state}
local model, id, owner, err = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retryable, now = ARGV[6] == '1', tonumber(ARGV[7])
local max_attempts, backoff = tonumber(ARGV[8]), tonumber(ARGV[9])
local r = km(model, 'req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'tenant', 'attempts', 'cancel')
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local attempts = tonumber(f[4])
redis.call('ZREM', km(model, 'leases'), id)
redis.call('HSET', r, 'error', err)
if retryable and attempts < max_attempts and f[5] ~= '1' then
  local due = now + backoff * 2 ^ (attempts - 1)
  redis.call('HSET', r, 'state', 'delayed', 'owner', '')
  redis.call('ZADD', km(model, 'delayed'), due, id)
  return {'RETRY', tostring(due)}
end
redis.call('HSET', r, 'state', 'dead', 'owner', '', 'done_ms', now)
redis.call('ZADD', km(model, 'dead'), now, id)
if ARGV[11] and ARGV[11] ~= '' then
  finish_stream(model, id, tonumber(ARGV[10]), 'type', 'error', 'error', err, 'attempts', tostring(attempts),
    'status', ARGV[11])
else
  finish_stream(model, id, tonumber(ARGV[10]), 'type', 'error', 'error', err, 'attempts', tostring(attempts))
end
settle_or_owe(model, id, f[3], false, 0, 0, now, tonumber(ARGV[10]))
return {'DEAD', f[3]}
