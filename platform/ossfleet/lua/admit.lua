-- admit: rate limits, queue bound, budget reservation, enqueue. All or nothing.
-- ARGV: P opts payload...
--   opts: one JSON object with the fields OPTS names; payload: each request's (prompt ids, sampling), in
--   the order of opts.group.
-- OPTS: tenant model band now_ms idem max_queue budget_limit_nusd period rpm tpm nbands weight alert_at_nusd
--       max_inflight inflight_ttl_ms track_inflight count_rate adapter usage_name group
--   budget_limit_nusd: -1 for no limit; max_inflight: 0 for no limit; track_inflight false: a batch line,
--   which does not count against the tenant's concurrent streams; count_rate false: a batch line, which
--   neither meets nor uses up the tenant's rpm/tpm; adapter: the LoRA adapter's cache key, or '' (pull.lua
--   prefers replicas that hold it); usage_name: what usage is recorded under ('': the model);
--   group: [{id, in_tokens, max_tokens, reserve_nusd}, ...]: the request, then the rest of a group admitted
--   all or nothing (n choices, a list of prompts).
-- The limits apply to the group's sums: requests, tokens, streams, queue slots, reservation.
-- Returns {'OK', ids} (ids joined by ',') | {'DUP', id} | {'RATE', what, retry_ms} | {'RATE_NEVER', what, limit}
--       | {'QUEUE_FULL', depth} | {'BUDGET', left_nusd} | {'CONCURRENCY', in_flight}
local o = cjson.decode(ARGV[2])
local tenant, model = o.tenant, o.model
local band = tostring(o.band)
local now = tonumber(o.now_ms)
local idem = o.idem
local max_queue = tonumber(o.max_queue)
local limit = tonumber(o.budget_limit_nusd)
local period = o.period
local rpm, tpm = tonumber(o.rpm), tonumber(o.tpm)
local nbands = tonumber(o.nbands)
local weight = o.weight
local alert_at = tostring(o.alert_at_nusd)
local max_inflight = tonumber(o.max_inflight)
local inflight_ttl = tonumber(o.inflight_ttl_ms)
local track_inflight = o.track_inflight
local count_rate = o.count_rate
local adapter, usage_name = o.adapter, o.usage_name

local group = {}
for i, g in ipairs(o.group) do
  group[i] = {id = g.id, payload = ARGV[2 + i], in_tok = tonumber(g.in_tokens), max_tok = tonumber(g.max_tokens),
    reserve = tonumber(g.reserve_nusd)}
end
local id = group[1].id
local count, tokens, total_reserve, ids = #group, 0, 0, {}
for _, g in ipairs(group) do
  tokens = tokens + g.in_tok + g.max_tok
  total_reserve = total_reserve + g.reserve
  ids[#ids + 1] = g.id
end
local joined = table.concat(ids, ',')

local idem_key = nil
if idem ~= '' then
  idem_key = k('idem', tenant, idem)
  local prior = redis.call('GET', idem_key)
  if prior then return {'DUP', prior} end
end

-- Sliding-window rate limits: the previous minute's count, weighted by how
-- much of it still overlaps the last 60 s, plus the current minute's.
local minute = math.floor(now / 60000)
local frac = (now % 60000) / 60000
local function window(kind, add, lim)
  local cur_k, prev_k = k('rl', kind, tenant, minute), k('rl', kind, tenant, minute - 1)
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
if count_rate then
  if tokens > tpm then return {'RATE_NEVER', 'tokens', tostring(tpm)} end
  if count > rpm then return {'RATE_NEVER', 'requests', tostring(rpm)} end
  local wait_req, wait_tok
  wait_req, req_k = window('req', count, rpm)
  if wait_req then return {'RATE', 'requests', tostring(wait_req)} end
  wait_tok, tok_k = window('tok', tokens, tpm)
  if wait_tok then return {'RATE', 'tokens', tostring(wait_tok)} end
end

-- Requests in flight (waiting or running) per tenant; entries leave when their
-- request ends, or expire as a safety net.
local inflight = k('inflight', tenant)
if max_inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
  local n = redis.call('ZCARD', inflight)
  if n + count > max_inflight then return {'CONCURRENCY', tostring(n)} end
end

local depth = 0
for b = 0, nbands - 1 do depth = depth + redis.call('ZCARD', k('wait', model, b)) end
if depth + count > max_queue then return {'QUEUE_FULL', tostring(depth)} end

local budget = k('budget', tenant, period)
if limit >= 0 then
  local f = redis.call('HMGET', budget, 'reserved', 'spent')
  local used = tonumber(f[1] or '0') + tonumber(f[2] or '0')
  if used + total_reserve > limit then return {'BUDGET', tostring(math.max(0, limit - used))} end
end

-- Accepted: from here on every write happens.
if count_rate then
  redis.call('INCRBY', req_k, count)
  redis.call('PEXPIRE', req_k, 120000)
  redis.call('INCRBY', tok_k, tokens)
  redis.call('PEXPIRE', tok_k, 120000)
end
redis.call('HINCRBY', budget, 'reserved', total_reserve)
-- Arrivals per band, ever: the autoscaling policy reads the rate from its increments.
redis.call('HINCRBY', k('arrivals', model), band, count)
local lane = k('lane', model, band, tenant)
for _, g in ipairs(group) do
  redis.call('HSET', k('req', g.id),
    'tenant', tenant, 'model', model, 'band', band, 'payload', g.payload,
    'in_tokens', g.in_tok, 'max_tokens', g.max_tok, 'reserved', g.reserve, 'period', period,
    'weight', weight, 'alert_at', alert_at, 'attempts', 0, 'state', 'queued', 'enq_ms', now, 'owner', '',
    'adapter', adapter, 'usage', usage_name)
  redis.call('RPUSH', lane, g.id)
  redis.call('ZADD', k('wait', model, band), now, g.id)
  if track_inflight then redis.call('ZADD', inflight, now + inflight_ttl, g.id) end
end
if redis.call('LLEN', lane) == count then mark_backlogged(model, band, tenant) end
redis.call('RPUSH', k('bell', model), '1')
redis.call('LTRIM', k('bell', model), -64, -1)
if idem_key then redis.call('SET', idem_key, joined, 'EX', 86400) end
return {'OK', joined}
