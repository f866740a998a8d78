-- admit: rate limits, queue bound, budget reservation, enqueue. All or nothing.
-- ARGV: P id tenant model band payload in_tokens max_tokens now_ms idem
--       max_queue reserve_nusd budget_limit_nusd period rpm tpm nbands weight alert_at_nusd
--       max_inflight (0: no limit) inflight_ttl_ms track_inflight ('0': a batch line, which
--       does not count against the tenant's concurrent streams) count_rate ('0': a batch line,
--       which neither meets nor uses up the tenant's rpm/tpm) adapter (the LoRA adapter's cache key, or
--       '': pull.lua prefers replicas that hold it) usage_name (what usage is recorded under; '': model)
--       then, for a group admitted all or nothing (n choices, a list of prompts), five more per
--       further request: id payload in_tokens max_tokens reserve_nusd
-- The limits apply to the group's sums: requests, tokens, streams, queue slots, reservation.
-- Returns {'OK', ids} (ids joined by ',') | {'DUP', id} | {'RATE', what, retry_ms} | {'RATE_NEVER', what, limit}
--       | {'QUEUE_FULL', depth} | {'BUDGET', left_nusd} | {'CONCURRENCY', in_flight}
local id, tenant, model = ARGV[2], ARGV[3], ARGV[4]
local band = ARGV[5]
local payload = ARGV[6]
local in_tok, max_tok = tonumber(ARGV[7]), tonumber(ARGV[8])
local now = tonumber(ARGV[9])
local idem = ARGV[10]
local max_queue = tonumber(ARGV[11])
local reserve = tonumber(ARGV[12])
local limit = tonumber(ARGV[13])
local period = ARGV[14]
local rpm, tpm = tonumber(ARGV[15]), tonumber(ARGV[16])
local nbands = tonumber(ARGV[17])
local weight = ARGV[18]
local alert_at = ARGV[19]
local max_inflight = tonumber(ARGV[20] or '0')
local inflight_ttl = tonumber(ARGV[21] or '3600000')
local track_inflight = ARGV[22] ~= '0'
local count_rate = ARGV[23] ~= '0'
local adapter, usage_name = ARGV[24], ARGV[25]

-- The group: this request, then the ones after ARGV[25].
local group = {{id = id, payload = payload, in_tok = in_tok, max_tok = max_tok, reserve = reserve}}
for i = 26, #ARGV, 5 do
  group[#group + 1] = {id = ARGV[i], payload = ARGV[i + 1], in_tok = tonumber(ARGV[i + 2]),
    max_tok = tonumber(ARGV[i + 3]), reserve = tonumber(ARGV[i + 4])}
end
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
