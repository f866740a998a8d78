-- Shared helpers, prepended to every ossfleet script.
-- Every key starts with the prefix P = "{namespace}:"; the braces are a Redis
-- Cluster hash tag, so all keys of a namespace live in one slot and each
-- script is atomic on a cluster too. KEYS[1] is always a key of that slot.
local P = ARGV[1]

-- A key from up to four parts. Fixed arity on purpose: building a table from
-- varargs on every call tripled the scripts' run time.
local function k(a, b, c, d)
  if d ~= nil then return P .. a .. ':' .. b .. ':' .. c .. ':' .. d end
  if c ~= nil then return P .. a .. ':' .. b .. ':' .. c end
  if b ~= nil then return P .. a .. ':' .. b end
  return P .. a
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

-- Adapter affinity. `held`: the LoRA adapters the pulling replica holds (a set), or nil when it serves
-- none. A request is servable at once when it uses no adapter or a held one.
local function servable(id, held)
  local a = redis.call('HGET', k('req', id), 'adapter')
  return (not a) or a == '' or held[a] ~= nil
end

-- Which request of `band` a replica holding `held` takes, given fair share's pick (`tenant`'s head `id`):
-- that one if servable; else, unless it has waited past the aging bound (then it goes first, loading its
-- adapter), the first servable one among the next tenants in fair-share order (their first 8 each), so a
-- replica loads an adapter only when none it holds has work. Without room to load one (`can_load`
-- false: every held adapter is in use) only a servable request is taken; nil when there is none.
local function prefer_held(model, band, tenant, id, held, can_load, now, aging_ms)
  if servable(id, held) then return tenant, id end
  local enq = tonumber(redis.call('HGET', k('req', id), 'enq_ms') or now)
  if can_load and now - enq >= aging_ms then return tenant, id end
  for _, t in ipairs(redis.call('ZRANGE', k('ready', model, band), 0, 7)) do
    for _, cand in ipairs(redis.call('LRANGE', k('lane', model, band, t), 0, 7)) do
      if servable(cand, held) then return t, cand end
    end
  end
  if can_load then return tenant, id end
  return nil, nil
end

local function held_set(csv)
  if csv == nil then return nil end
  local set = {}
  for a in string.gmatch(csv, '[^,]+') do set[a] = true end
  return set
end

-- Lease the next request of `model` to `owner`: highest band (0) first,
-- unless a lower band holds a request older than the aging bound, which then
-- goes first; within a band, the backlogged tenant with the least weighted
-- service; FIFO within a tenant. Only bands below `pull_bands` are looked at
-- (a replica short of free slots leaves the lowest, batch band alone). With `held_csv` (the adapters the
-- replica holds, comma-separated), adapter affinity within the band (prefer_held).
-- Returns nil or {id, payload, attempts, tenant, band, enq_ms}.
local function lease_next(model, nbands, now, aging_ms, owner, lease_ms, w_in, pull_bands, held_csv, can_load)
  local top, aged_band, aged_id, aged_score = nil, nil, nil, nil
  for b = 0, math.min(nbands, pull_bands or nbands) - 1 do
    local o = redis.call('ZRANGE', k('wait', model, b), 0, 0, 'WITHSCORES')
    if #o > 0 then
      local s = tonumber(o[2])
      if top == nil then top = b end
      if now - s >= aging_ms and (aged_score == nil or s < aged_score) then
        aged_band, aged_id, aged_score = b, o[1], s
      end
    end
  end
  if top == nil then return nil end

  local band, tenant
  if aged_band ~= nil and aged_band ~= top then
    band, tenant = aged_band, redis.call('HGET', k('req', aged_id), 'tenant')
  else
    band = top
    tenant = redis.call('ZRANGE', k('ready', model, band), 0, 0)[1]
  end
  local lane = k('lane', model, band, tenant)
  local id
  local held = held_set(held_csv)
  if held == nil then
    id = redis.call('LPOP', lane)
  else
    tenant, id = prefer_held(model, band, tenant, redis.call('LINDEX', lane, 0), held, can_load, now, aging_ms)
    if id == nil then return nil end
    lane = k('lane', model, band, tenant)
    redis.call('LREM', lane, 1, id)
  end
  if redis.call('LLEN', lane) == 0 then redis.call('ZREM', k('ready', model, band), tenant) end
  redis.call('ZREM', k('wait', model, band), id)

  local r = k('req', id)
  local attempts = redis.call('HINCRBY', r, 'attempts', 1)
  if attempts == 1 then redis.call('HSET', r, 'first_lease_ms', now) end
  local deadline = now + lease_ms
  redis.call('HSET', r, 'state', 'leased', 'owner', owner, 'lease_ms', deadline)
  redis.call('ZADD', k('leases', model), deadline, id)
  local f = redis.call('HMGET', r, 'payload', 'in_tokens', 'weight', 'enq_ms')
  charge_service(model, tenant, w_in * tonumber(f[2]) / tonumber(f[3]), nbands)
  return {id, f[1], attempts, tenant, tonumber(band), f[4]}
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

-- The terminal event of a request's result stream, and the stream's TTL; the
-- request stops counting against its tenant's in-flight limit.
local function finish_stream(id, ttl_s, ...)
  local tenant = redis.call('HGET', k('req', id), 'tenant')
  if tenant then redis.call('ZREM', k('inflight', tenant), id) end
  local s = k('stream', id)
  redis.call('XADD', s, '*', ...)
  redis.call('EXPIRE', s, ttl_s)
  redis.call('EXPIRE', k('req', id), ttl_s)
end
