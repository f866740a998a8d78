-- reap: expired leases go back to the head of their queue (or to the dead
-- letters after max_attempts); delayed retries that are due are requeued.
-- ARGV: P model now_ms max_attempts limit stream_ttl_s
-- Returns {requeued, retried, dead, dead_tenants...} (dead_tenants: id and tenant of each dead-lettered
-- request, in pairs, for the caller to settle on a cluster)
local model, now = ARGV[2], tonumber(ARGV[3])
local max_attempts, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local requeued, retried, dead, owed = 0, 0, 0, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', km(model, 'leases'), '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', km(model, 'leases'), id)
  local r = km(model, 'req', id)
  local f = redis.call('HMGET', r, 'attempts', 'tenant')
  local attempts = tonumber(f[1] or '0')
  if attempts >= max_attempts then
    redis.call('HSET', r, 'state', 'dead', 'owner', '', 'done_ms', now,
      'error', 'lease expired ' .. attempts .. ' times (replica lost)')
    redis.call('ZADD', km(model, 'dead'), now, id)
    finish_stream(model, id, ttl, 'type', 'error',
      'error', 'the request was attempted ' .. attempts .. ' times and its replica was lost each time',
      'attempts', tostring(attempts))
    settle_or_owe(model, id, f[2], false, 0, 0, now, ttl)
    owed[#owed + 1] = id
    owed[#owed + 1] = f[2]
    dead = dead + 1
  else
    requeue_head(model, id)
    requeued = requeued + 1
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', km(model, 'delayed'), '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', km(model, 'delayed'), id)
  requeue_head(model, id)
  retried = retried + 1
end
local out = {requeued, retried, dead}
for _, v in ipairs(owed) do out[#out + 1] = v end
return out
