-- complete: ack a lease, settle the actual cost (refunding the rest of the
-- reservation), record usage, charge fair-share service, end the stream.
-- ARGV: P id owner out_tokens cost_nusd now_ms w_out nbands stream_ttl_s finish_reason
-- Returns {'OK', spent_nusd, limit_crossed} | {'ALREADY'} | {'LOST', state}
local id, owner = ARGV[2], ARGV[3]
local out_tok, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local now, w_out, nbands = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local r = k('req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'tenant', 'model', 'period', 'reserved', 'in_tokens',
  'weight', 'cancel')
if f[1] == 'done' then return {'ALREADY'} end
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local tenant, model, period = f[3], f[4], f[5]
redis.call('ZREM', k('leases', model), id)
redis.call('HSET', r, 'state', 'done', 'owner', '', 'out_tokens', out_tok, 'cost', cost, 'done_ms', now)
local budget = k('budget', tenant, period)
redis.call('HINCRBY', budget, 'reserved', -tonumber(f[6]))
local spent = redis.call('HINCRBY', budget, 'spent', cost)
redis.call('HSET', r, 'reserved', '0')
local usage = k('usage', tenant, period)
redis.call('HINCRBY', usage, model .. ':requests', 1)
redis.call('HINCRBY', usage, model .. ':input_tokens', tonumber(f[7]))
redis.call('HINCRBY', usage, model .. ':output_tokens', out_tok)
redis.call('HINCRBY', usage, 'cost_nusd', cost)
charge_service(model, tenant, w_out * out_tok / tonumber(f[8]), nbands)
local reason = ARGV[10]
if f[9] == '1' then reason = 'cancelled' end
finish_stream(id, tonumber(ARGV[9]), 'type', 'done', 'finish_reason', reason,
  'input_tokens', f[7], 'output_tokens', tostring(out_tok), 'cost_nusd', tostring(cost))
return {'OK', tostring(spent)}
