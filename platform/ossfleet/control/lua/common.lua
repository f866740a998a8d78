-- Shared helpers, prepended to every ossfleet script (after `local CLUSTER = true|false`, which the
-- queue sets: on a Redis Cluster a script touches one hash slot only).
-- Keys (see keyspace.py): a model's queue state, requests and streams under the tag {NS:m:<model>}; a
-- tenant's money and limits under {NS:t:<tenant>}; the rest under {NS}. KEYS[1] is a key of the slot the
-- script runs in.
local NS = ARGV[1]

-- Keys from up to three parts after the tag. Fixed arity on purpose: building a table from varargs on
-- every call tripled the scripts' run time.
local function kg(a, b)
  if b ~= nil then return '{' .. NS .. '}:' .. a .. ':' .. b end
  return '{' .. NS .. '}:' .. a
end
local function km(model, a, b, c)
  local p = '{' .. NS .. ':m:' .. model .. '}:' .. a
  if c ~= nil then return p .. ':' .. b .. ':' .. c end
  if b ~= nil then return p .. ':' .. b end
  return p
end
local function kt(tenant, a, b, c)
  local p = '{' .. NS .. ':t:' .. tenant .. '}:' .. a
  if c ~= nil then return p .. ':' .. b .. ':' .. c end
  if b ~= nil then return p .. ':' .. b end
  return p
end

-- The fair-share counter of `tenant` on `model`, lifted (when the tenant
-- becomes backlogged in `band`) to the smallest counter among tenants already
-- backlogged there, so that idle time banks no credit (VTC, OSDI 2024).
local function mark_backlogged(model, band, tenant)
  local ready = km(model, 'ready', band)
  local counter = tonumber(redis.call('HGET', km(model, 'vtc'), tenant) or '0')
  local low = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  if #low > 0 and tonumber(low[2]) > counter then
    counter = tonumber(low[2])
    redis.call('HSET', km(model, 'vtc'), tenant, tostring(counter))
  end
  redis.call('ZADD', ready, counter, tenant)
end

-- Add `amount` of weighted service to a tenant's counter, and move it in
-- every band where it waits.
local function charge_service(model, tenant, amount, nbands)
  if amount <= 0 then return end
  local counter = tonumber(redis.call('HINCRBYFLOAT', km(model, 'vtc'), tenant, amount))
  for b = 0, nbands - 1 do
    redis.call('ZADD', km(model, 'ready', b), 'XX', counter, tenant)
  end
end

-- Adapter affinity. `held`: the LoRA adapters the pulling replica holds (a set), or nil when it serves
-- none. A request is servable at once when it uses no adapter or a held one.
local function servable(model, id, held)
  local a = redis.call('HGET', km(model, 'req', id), 'adapter')
  return (not a) or a == '' or held[a] ~= nil
end

-- Which request of `band` a replica holding `held` takes, given fair share's pick (`tenant`'s head `id`):
-- that one if servable; else, unless it has waited past the aging bound (then it goes first, loading its
-- adapter), the first servable one among the next tenants in fair-share order (their first 8 each), so a
-- replica loads an adapter only when none it holds has work. Without room to load one (`can_load`
-- false: every held adapter is in use) only a servable request is taken; nil when there is none.
local function prefer_held(model, band, tenant, id, held, can_load, now, aging_ms)
  if servable(model, id, held) then return tenant, id end
  local enq = tonumber(redis.call('HGET', km(model, 'req', id), 'enq_ms') or now)
  if can_load and now - enq >= aging_ms then return tenant, id end
  for _, t in ipairs(redis.call('ZRANGE', km(model, 'ready', band), 0, 7)) do
    for _, cand in ipairs(redis.call('LRANGE', km(model, 'lane', band, t), 0, 7)) do
      if servable(model, cand, held) then return t, cand end
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
-- Lease request ``id``, just taken from ``tenant``'s lane in ``band``: the end of every pull.
local function lease_taken(model, nbands, now, owner, lease_ms, w_in, band, tenant, lane, id)
  if redis.call('LLEN', lane) == 0 then redis.call('ZREM', km(model, 'ready', band), tenant) end
  redis.call('ZREM', km(model, 'wait', band), id)

  local r = km(model, 'req', id)
  local attempts = redis.call('HINCRBY', r, 'attempts', 1)
  if attempts == 1 then redis.call('HSET', r, 'first_lease_ms', now) end
  local deadline = now + lease_ms
  redis.call('HSET', r, 'state', 'leased', 'owner', owner, 'lease_ms', deadline)
  redis.call('ZADD', km(model, 'leases'), deadline, id)
  local f = redis.call('HMGET', r, 'payload', 'in_tokens', 'weight', 'enq_ms')
  charge_service(model, tenant, w_in * tonumber(f[2]) / tonumber(f[3]), nbands)
  return {id, f[1], attempts, tenant, tonumber(band), f[4]}
end

-- The fair-share pick among tenants not in ``exclude_csv`` (comma-separated): the first such tenant in
-- fair-share order of the first band that has one. A replica whose slots one tenant's requests fill
-- leases its headroom this way, to tenants with nothing running there.
local function lease_excluding(model, nbands, now, owner, lease_ms, w_in, pull_bands, exclude_csv)
  local excluded, n = {}, 0
  for t in string.gmatch(exclude_csv, '[^,]+') do excluded[t] = true; n = n + 1 end
  for b = 0, math.min(nbands, pull_bands or nbands) - 1 do
    for _, t in ipairs(redis.call('ZRANGE', km(model, 'ready', b), 0, n)) do
      if not excluded[t] then
        local lane = km(model, 'lane', b, t)
        local id = redis.call('LPOP', lane)
        if id then return lease_taken(model, nbands, now, owner, lease_ms, w_in, b, t, lane, id) end
      end
    end
  end
  return nil
end

local function lease_next(model, nbands, now, aging_ms, owner, lease_ms, w_in, pull_bands, held_csv, can_load,
                          exclude_csv)
  if exclude_csv and exclude_csv ~= '' then
    return lease_excluding(model, nbands, now, owner, lease_ms, w_in, pull_bands, exclude_csv)
  end
  local top, aged_band, aged_id, aged_score = nil, nil, nil, nil
  for b = 0, math.min(nbands, pull_bands or nbands) - 1 do
    local o = redis.call('ZRANGE', km(model, 'wait', b), 0, 0, 'WITHSCORES')
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
    band, tenant = aged_band, redis.call('HGET', km(model, 'req', aged_id), 'tenant')
  else
    band = top
    tenant = redis.call('ZRANGE', km(model, 'ready', band), 0, 0)[1]
  end
  local lane = km(model, 'lane', band, tenant)
  local id
  local held = held_set(held_csv)
  if held == nil then
    id = redis.call('LPOP', lane)
  else
    tenant, id = prefer_held(model, band, tenant, redis.call('LINDEX', lane, 0), held, can_load, now, aging_ms)
    if id == nil then return nil end
    lane = km(model, 'lane', band, tenant)
    redis.call('LREM', lane, 1, id)
  end
  return lease_taken(model, nbands, now, owner, lease_ms, w_in, band, tenant, lane, id)
end

-- lease_next over an options object (pull.lua's OPTS; complete.lua's, which leases the freed slot's next):
-- model nbands now_ms aging_ms owner lease_ms w_in pull_bands [exclude] [held can_load].
local function lease_next_opts(o)
  return lease_next(o.model, o.nbands, o.now_ms, o.aging_ms, o.owner, o.lease_ms, o.w_in, o.pull_bands, o.held,
    o.can_load == true, o.exclude)
end

-- Put a request back at the head of its tenant's lane, keeping its original
-- enqueue time (so that aging still counts from its first arrival).
local function requeue_head(model, id)
  local r = km(model, 'req', id)
  local f = redis.call('HMGET', r, 'tenant', 'band', 'enq_ms')
  local tenant, band = f[1], f[2]
  redis.call('HSET', r, 'state', 'queued', 'owner', '')
  local lane = km(model, 'lane', band, tenant)
  redis.call('LPUSH', lane, id)
  if redis.call('LLEN', lane) == 1 then mark_backlogged(model, band, tenant) end
  redis.call('ZADD', km(model, 'wait', band), f[3], id)
  redis.call('RPUSH', km(model, 'bell'), '1')
  redis.call('LTRIM', km(model, 'bell'), -64, -1)
end

-- The terminal event of a request's result stream, and the TTL of the stream and the request.
local function finish_stream(model, id, ttl_s, ...)
  local s = km(model, 'stream', id)
  redis.call('XADD', s, '*', ...)
  redis.call('EXPIRE', s, ttl_s)
  redis.call('EXPIRE', km(model, 'req', id), ttl_s)
end

-- -- A tenant's side (its slot): reservations and settlement -------------------------------------------

-- Settle request `id` of `tenant` once: give back its reservation and, when `charge`, spend `cost` and
-- record its usage; it stops counting against the tenant's in-flight limit. Idempotent by the reservation
-- record (a second call, or one for an unknown id, does nothing and returns nil). Returns {spent, alert}:
-- alert is nil, or the soft-alert event's fields when this spend crossed the tenant's alert mark for the
-- period (once per tenant and period); on a single Redis the event is also written to the alerts stream.
local function settle(tenant, id, charge, cost, out_tok, ttl_s)
  local rk = kt(tenant, 'resv', id)
  local f = redis.call('HMGET', rk, 'period', 'reserved', 'in_tokens', 'usage', 'alert_at', 'settled')
  if not f[1] or f[6] == '1' then return nil end
  local period, reserved = f[1], tonumber(f[2])
  local budget = kt(tenant, 'budget', period)
  if reserved ~= 0 then redis.call('HINCRBY', budget, 'reserved', -reserved) end
  redis.call('HSET', rk, 'settled', '1', 'reserved', '0')
  redis.call('EXPIRE', rk, ttl_s)
  redis.call('ZREM', kt(tenant, 'inflight'), id)
  if CLUSTER then redis.call('ZREM', kt(tenant, 'pending'), id) end
  if not charge then return {tonumber(redis.call('HGET', budget, 'spent') or '0'), nil} end
  local spent = redis.call('HINCRBY', budget, 'spent', cost)
  local usage = kt(tenant, 'usage', period)
  local used = f[4]  -- the model, or '<model>:<adapter>'
  redis.call('HINCRBY', usage, used .. ':requests', 1)
  redis.call('HINCRBY', usage, used .. ':input_tokens', tonumber(f[3]))
  redis.call('HINCRBY', usage, used .. ':output_tokens', out_tok)
  redis.call('HINCRBY', usage, 'cost_nusd', cost)
  local alert_at = tonumber(f[5] or '0')
  if alert_at > 0 and spent >= alert_at and spent - cost < alert_at then
    if redis.call('SET', kt(tenant, 'alerted', period), '1', 'NX', 'EX', 40 * 86400) then
      local ev = {'type', 'budget_soft_limit', 'tenant', tenant, 'period', period, 'spent_nusd', tostring(spent),
        'alert_at_nusd', tostring(alert_at)}
      if not CLUSTER then redis.call('XADD', kg('alerts'), 'MAXLEN', '~', 10000, '*', unpack(ev)) end
      return {spent, ev}
    end
  end
  return {spent, nil}
end

-- -- A model's side (its slot): a request that ended ------------------------------------------------------

-- Request `id` of `model` ended: settle it with its tenant at once on a single Redis; on a cluster note
-- what is owed (the `owed` set, read by the caller and, after a crash, by the reconciler) for the
-- tenant's slot, and keep the request's record (which says what is owed) until it is settled: the
-- settling caller gives it its TTL. Returns settle()'s reply on a single Redis, nil on a cluster.
local function settle_or_owe(model, id, tenant, charge, cost, out_tok, now, ttl_s)
  if not CLUSTER then return settle(tenant, id, charge, cost, out_tok, ttl_s) end
  redis.call('HSET', km(model, 'req', id), 'settle', charge and 'charge' or 'refund', 'cost', cost,
    'out_tokens', out_tok)
  redis.call('ZADD', km(model, 'owed'), now, id)
  redis.call('PERSIST', km(model, 'req', id))
  return nil
end

-- -- Admission: a tenant's side (reserve) and a model's side (enqueue) -----------------------------------

-- The group an admission's options describe: {id, payload, in_tok, max_tok, reserve} each, the payloads
-- from ARGV[first_payload] on (when the script is given them), and the group's tokens and reservation.
local function admission(o, first_payload)
  local group, tokens, total, ids = {}, 0, 0, {}
  for i, g in ipairs(o.group) do
    group[i] = {id = g.id, payload = first_payload and ARGV[first_payload + i - 1], in_tok = tonumber(g.in_tokens),
      max_tok = tonumber(g.max_tokens), reserve = tonumber(g.reserve_nusd)}
    tokens = tokens + group[i].in_tok + group[i].max_tok
    total = total + group[i].reserve
    ids[i] = g.id
  end
  return group, tokens, total, table.concat(ids, ',')
end

-- The tenant's limits, checked without writing: an idempotency key seen before, the rate limits, the
-- in-flight limit, the budget. Returns a refusal (or {'DUP', ids}) or nil, and the rate counters' keys.
local function reserve_check(o, count, tokens, total_reserve, now)
  local tenant = o.tenant
  if o.idem ~= '' then
    local prior = redis.call('GET', kt(tenant, 'idem', o.idem))
    if prior then return {'DUP', prior} end
  end
  -- Sliding-window rate limits: the previous minute's count, weighted by how much of it still overlaps
  -- the last 60 s, plus the current minute's.
  local minute = math.floor(now / 60000)
  local frac = (now % 60000) / 60000
  local function window(kind, add, lim)
    local cur_k, prev_k = kt(tenant, 'rl', kind, minute), kt(tenant, 'rl', kind, minute - 1)
    local cur = tonumber(redis.call('GET', cur_k) or '0')
    local prev = tonumber(redis.call('GET', prev_k) or '0')
    if prev * (1 - frac) + cur + add <= lim then return nil, cur_k end
    -- How long until enough of the previous minute has slid out.
    if prev > 0 and cur + add <= lim then
      local f = 1 - (lim - cur - add) / prev
      return math.max(1, math.ceil((f - frac) * 60000)), cur_k
    end
    return 60000 - (now % 60000) + 1, cur_k
  end
  local req_k, tok_k = nil, nil
  if o.count_rate then
    local rpm, tpm = tonumber(o.rpm), tonumber(o.tpm)
    if tokens > tpm then return {'RATE_NEVER', 'tokens', tostring(tpm)} end
    if count > rpm then return {'RATE_NEVER', 'requests', tostring(rpm)} end
    local wait_req, wait_tok
    wait_req, req_k = window('req', count, rpm)
    if wait_req then return {'RATE', 'requests', tostring(wait_req)} end
    wait_tok, tok_k = window('tok', tokens, tpm)
    if wait_tok then return {'RATE', 'tokens', tostring(wait_tok)} end
  end
  -- Requests in flight (waiting or running); entries leave when their request is settled, or expire as a
  -- safety net.
  local max_inflight = tonumber(o.max_inflight)
  if max_inflight > 0 then
    local inflight = kt(tenant, 'inflight')
    redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
    local n = redis.call('ZCARD', inflight)
    if n + count > max_inflight then return {'CONCURRENCY', tostring(n)} end
  end
  local limit = tonumber(o.budget_limit_nusd)
  if limit >= 0 then
    local f = redis.call('HMGET', kt(tenant, 'budget', o.period), 'reserved', 'spent')
    local used = tonumber(f[1] or '0') + tonumber(f[2] or '0')
    if used + total_reserve > limit then return {'BUDGET', tostring(math.max(0, limit - used))} end
  end
  return nil, req_k, tok_k
end

-- Reserve: the rate counters, the budget's reservation, the in-flight entries, one reservation record per
-- request (on a cluster also `pending`, until the reconciler or the settlement sees it enqueued), the
-- idempotency key.
local function reserve_write(o, group, tokens, total_reserve, now, req_k, tok_k, joined)
  local tenant = o.tenant
  local minute = math.floor(now / 60000)
  if o.count_rate then
    redis.call('INCRBY', req_k, #group)
    redis.call('PEXPIRE', req_k, 120000)
    redis.call('INCRBY', tok_k, tokens)
    redis.call('PEXPIRE', tok_k, 120000)
  end
  redis.call('HINCRBY', kt(tenant, 'budget', o.period), 'reserved', total_reserve)
  local usage = o.usage_name
  if usage == '' then usage = o.model end
  for _, g in ipairs(group) do
    if o.track_inflight then redis.call('ZADD', kt(tenant, 'inflight'), now + tonumber(o.inflight_ttl_ms), g.id) end
    redis.call('HSET', kt(tenant, 'resv', g.id), 'model', o.model, 'period', o.period, 'reserved', g.reserve,
      'in_tokens', g.in_tok, 'usage', usage, 'alert_at', tostring(o.alert_at_nusd), 'ms', now,
      'minute', minute, 'tokens', g.in_tok + g.max_tok, 'rated', o.count_rate and '1' or '0', 'idem', o.idem)
    if CLUSTER then redis.call('ZADD', kt(tenant, 'pending'), now, g.id) end
  end
  if o.idem ~= '' then redis.call('SET', kt(tenant, 'idem', o.idem), joined, 'EX', 86400) end
end

-- The model's queue bound, checked without writing: a refusal or nil.
local function enqueue_check(o, count)
  local depth = 0
  for b = 0, tonumber(o.nbands) - 1 do depth = depth + redis.call('ZCARD', km(o.model, 'wait', b)) end
  if depth + count > tonumber(o.max_queue) then return {'QUEUE_FULL', tostring(depth)} end
  return nil
end

-- Enqueue: each request's record, its tenant's lane, the wait index, the arrival count, the bell.
local function enqueue_write(o, group, now)
  local model, tenant, band = o.model, o.tenant, tostring(o.band)
  -- Arrivals per band, ever: the autoscaling policy reads the rate from its increments.
  redis.call('HINCRBY', km(model, 'arrivals'), band, #group)
  local lane = km(model, 'lane', band, tenant)
  for _, g in ipairs(group) do
    redis.call('HSET', km(model, 'req', g.id),
      'tenant', tenant, 'model', model, 'band', band, 'payload', g.payload,
      'in_tokens', g.in_tok, 'max_tokens', g.max_tok, 'weight', o.weight, 'attempts', 0, 'state', 'queued',
      'enq_ms', now, 'owner', '', 'adapter', o.adapter)
    redis.call('RPUSH', lane, g.id)
    redis.call('ZADD', km(model, 'wait', band), now, g.id)
  end
  if redis.call('LLEN', lane) == #group then mark_backlogged(model, band, tenant) end
  redis.call('RPUSH', km(model, 'bell'), '1')
  redis.call('LTRIM', km(model, 'bell'), -64, -1)
end

-- A charge outside the queue (a dedicated-mode batch line): spend and usage, in the tenant's slot.
-- A dedicated-mode line's reservation (batch_reserve.lua: 'period amount' under its index), released once,
-- in the period it was reserved in.
local function release_line(tenant, job, index)
  local held = kt(tenant, 'bresv', job)
  local v = redis.call('HGET', held, index)
  if not v then return 0 end
  local period, amount = string.match(v, '^(%S+) (%d+)$')
  redis.call('HDEL', held, index)
  redis.call('HINCRBY', kt(tenant, 'budget', period), 'reserved', -tonumber(amount))
  return tonumber(amount)
end

local function charge_line(tenant, period, model, cost, in_tok, out_tok)
  redis.call('HINCRBY', kt(tenant, 'budget', period), 'spent', cost)
  local usage = kt(tenant, 'usage', period)
  redis.call('HINCRBY', usage, model .. ':requests', 1)
  redis.call('HINCRBY', usage, model .. ':input_tokens', in_tok)
  redis.call('HINCRBY', usage, model .. ':output_tokens', out_tok)
  redis.call('HINCRBY', usage, 'cost_nusd', cost)
end
