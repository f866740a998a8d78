-- Shared helpers, prepended to every ossfleet script.
-- Every key starts with the prefix P = "{namespace}:"; the braces are a Redis
-- Cluster hash tag, so all keys of a namespace live in one slot and each
-- script is atomic on a cluster too. KEYS[1] is always a key of that slot.
local P = ARGV[1]

local function k(...)
  return P .. table.concat({...}, ':')
end

-- The fair-share counter of `tenant` on `model`, lifted (when the tenant
-- becomes backlogged in `band`) to the smallest counter among tenants already
-- backlogged there, so that idle time banks no credit (VTC, OSDI 2024).
local function mark_backlogged(model, band, tenant)
  local ready = k('ready', model, band)
  local counter = tonumber(redis.call('HGET', k('vtc', model), tenant) or '0')
  local low = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  if #low > 0 and tonumber(low[2]) > counter then
    counter = tonumber(low[2])
    redis.call('HSET', k('vtc', model), tenant, tostring(counter))
  end
  redis.call('ZADD', ready, counter, tenant)
end

-- Add `amount` of weighted service to a tenant's counter, and move it in
-- every band where it waits.
local function charge_service(model, tenant, amount, nbands)
  if amount <= 0 then return end
  local counter = tonumber(redis.call('HINCRBYFLOAT', k('vtc', model), tenant, amount))
  for b = 0, nbands - 1 do
    redis.call('ZADD', k('ready', model, b), 'XX', counter, tenant)
  end
end

-- Put a request back at the head of its tenant's lane, keeping its original
-- enqueue time (so that aging still counts from its first arrival).
local function requeue_head(id)
  local r = k('req', id)
  local f = redis.call('HMGET', r, 'tenant', 'model', 'band', 'enq_ms')
  local tenant, model, band = f[1], f[2], f[3]
  redis.call('HSET', r, 'state', 'queued', 'owner', '')
  local lane = k('lane', model, band, tenant)
  redis.call('LPUSH', lane, id)
  if redis.call('LLEN', lane) == 1 then mark_backlogged(model, band, tenant) end
  redis.call('ZADD', k('wait', model, band), f[4], id)
  redis.call('RPUSH', k('bell', model), '1')
  redis.call('LTRIM', k('bell', model), -64, -1)
end

-- Give back a request's whole reservation (it will not be charged).
local function refund(id)
  local r = k('req', id)
  local f = redis.call('HMGET', r, 'tenant', 'period', 'reserved')
  local reserved = tonumber(f[3] or '0')
  if reserved > 0 then
    redis.call('HINCRBY', k('budget', f[1], f[2]), 'reserved', -reserved)
    redis.call('HSET', r, 'reserved', '0')
  end
end

-- The terminal event of a request's result stream, and the stream's TTL.
local function finish_stream(id, ttl_s, ...)
  local s = k('stream', id)
  redis.call('XADD', s, '*', ...)
  redis.call('EXPIRE', s, ttl_s)
  redis.call('EXPIRE', k('req', id), ttl_s)
end
