-- fail: a leased request failed. Retry it after a backoff while attempts
-- remain and the error is retryable; otherwise dead-letter it, refund its
-- reservation and end its stream with the error.
-- ARGV: P opts
-- OPTS: model id owner error retryable now_ms max_attempts backoff_ms stream_ttl_s [status]
--   status: the HTTP status the error is the caller's (400: the request itself cannot be served).
-- Returns {'RETRY', due_ms} | {'DEAD', tenant} | {'LOST', state}
local o = cjson.decode(ARGV[2])
local model, id, owner, err, now = o.model, o.id, o.owner, o.error, o.now_ms
local r = km(model, 'req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'tenant', 'attempts', 'cancel')
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local attempts = tonumber(f[4])
redis.call('ZREM', km(model, 'leases'), id)
redis.call('HSET', r, 'error', err)
if o.retryable and attempts < o.max_attempts and f[5] ~= '1' then
  local due = now + o.backoff_ms * 2 ^ (attempts - 1)
  redis.call('HSET', r, 'state', 'delayed', 'owner', '')
  redis.call('ZADD', km(model, 'delayed'), due, id)
  return {'RETRY', string.format('%d', due)}
end
redis.call('HSET', r, 'state', 'dead', 'owner', '', 'done_ms', now)
redis.call('ZADD', km(model, 'dead'), now, id)
if o.status then
  finish_stream(model, id, o.stream_ttl_s, 'type', 'error', 'error', err, 'attempts', tostring(attempts),
    'status', tostring(o.status))
else
  finish_stream(model, id, o.stream_ttl_s, 'type', 'error', 'error', err, 'attempts', tostring(attempts))
end
settle_or_owe(model, id, f[3], false, 0, 0, now, o.stream_ttl_s)
return {'DEAD', f[3]}
