-- complete: ack a lease, settle the actual cost (refunding the rest of the
-- reservation), record usage, charge fair-share service, end the stream.
-- ARGV: P id owner out_tokens cost_nusd now_ms w_out nbands stream_ttl_s finish_reason
--       [aging_ms lease_ms w_in pull_bands [held_adapters can_load]]: when given, also lease the
--       owner's next request of the same model in the same call (the slot this completion frees).
-- When this spend crosses the tenant's soft-alert mark for the period, one
-- event goes to the `alerts` stream (once per tenant and period).
-- Returns {'OK', spent_nusd, alerted(0|1), next_lease|nil} | {'ALREADY'} | {'LOST', state}
local id, owner = ARGV[2], ARGV[3]
local out_tok, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local now, w_out, nbands = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local r = k('req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'tenant', 'model', 'period', 'reserved', 'in_tokens',
  'weight', 'cancel', 'alert_at', 'usage')
if f[1] == 'done' then return {'ALREADY'} end
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local tenant, model, period = f[3], f[4], f[5]
redis.call('ZREM', k('leases', model), id)
redis.call('HSET', r, 'state', 'done', 'owner', '', 'out_tokens', out_tok, 'cost', cost, 'done_ms', now)
local budget = k('budget', tenant, period)
redis.call('HINCRBY', budget, 'reserved', 0 - tonumber(f[6]))  -- never -0, which is no integer
local spent = redis.call('HINCRBY', budget, 'spent', cost)
redis.call('HSET', r, 'reserved', '0')
local usage = k('usage', tenant, period)
local used = model  -- an adapter's requests are recorded as '<model>:<adapter>'
if f[11] and f[11] ~= '' then used = f[11] end
redis.call('HINCRBY', usage, used .. ':requests', 1)
redis.call('HINCRBY', usage, used .. ':input_tokens', tonumber(f[7]))
redis.call('HINCRBY', usage, used .. ':output_tokens', out_tok)
redis.call('HINCRBY', usage, 'cost_nusd', cost)
charge_service(model, tenant, w_out * out_tok / tonumber(f[8]), nbands)
local reason = ARGV[10]
if f[9] == '1' then reason = 'cancelled' end
finish_stream(id, tonumber(ARGV[9]), 'type', 'done', 'finish_reason', reason,
  'input_tokens', f[7], 'output_tokens', tostring(out_tok), 'cost_nusd', tostring(cost))
local alerted = 0
local alert_at = tonumber(f[10] or '0')
if alert_at > 0 and spent >= alert_at and spent - cost < alert_at then
  if redis.call('SET', k('alerted', tenant, period), '1', 'NX', 'EX', 40 * 86400) then
    redis.call('XADD', k('alerts'), 'MAXLEN', '~', 10000, '*', 'type', 'budget_soft_limit', 'tenant', tenant,
      'period', period, 'spent_nusd', tostring(spent), 'alert_at_nusd', tostring(alert_at))
    alerted = 1
  end
end
local nxt = nil
if ARGV[11] then
  nxt = lease_next(model, nbands, tonumber(now), tonumber(ARGV[11]), owner, tonumber(ARGV[12]), tonumber(ARGV[13]),
    tonumber(ARGV[14] or ARGV[8]), ARGV[15], ARGV[16] == '1')
end
return {'OK', tostring(spent), alerted, nxt}
