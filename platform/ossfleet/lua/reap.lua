-- reap: expired leases go back to the head of their queue (or to the dead
-- letters after max_attempts); delayed retries that are due are requeued.
-- ARGV: P model now_ms max_attempts limit stream_ttl_s
-- Returns {requeued, retried, dead}
local model, now = ARGV[2], tonumber(ARGV[3])
local max_attempts, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local requeued, retried, dead = 0, 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k('leases', model), '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', k('leases', model), id)
  local r = k('req', id)
  local attempts = tonumber(redis.call('HGET', r, 'attempts') or '0')
  if attempts >= max_attempts then
    redis.call('HSET', r, 'state', 'dead', 'owner', '', 'done_ms', now,
      'error', 'lease expired ' .. attempts .. ' times (replica lost)')
    redis.call('ZADD', k('dead', model), now, id)
    refund(id)
    finish_stream(id, tonumber(ARGV[6]), 'type', 'error',
      'error', 'the request was attempted ' .. attempts .. ' times and its replica was lost each time',
      'attempts', tostring(attempts))
    dead = dead + 1
  else
    requeue_head(id)
    requeued = requeued + 1
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k('delayed', model), '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', k('delayed', model), id)
  requeue_head(id)
  retried = retried + 1
end
return {requeued, retried, dead}
