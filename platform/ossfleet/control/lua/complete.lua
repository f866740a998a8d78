-- complete: ack a lease, settle the actual cost (refunding the rest of the reservation, recording usage;
-- on a cluster the tenant's side is settle.lua, called next), charge fair-share service, end the stream.
-- ARGV: P model id owner out_tokens cost_nusd now_ms w_out nbands stream_ttl_s finish_reason events
--       [aging_ms lease_ms w_in pull_bands [held_adapters can_load]]: when given, also lease the
--       owner's next request of the same model in the same call (the slot this completion frees).
--   events: the request's last output events, a JSON list of flat [name, value, ...] lists, written to
--   its stream before the end (one round trip fewer than emitting them first); '' for none.
-- When this spend crosses the tenant's soft-alert mark for the period, one event goes to the `alerts`
-- stream (once per tenant and period).
-- Returns {'OK', spent_nusd, tenant, next_lease|false, alert...} (spent_nusd -1 on a cluster, where the
-- settlement comes next) | {'ALREADY'} | {'LOST', state}
local model, id, owner = ARGV[2], ARGV[3], ARGV[4]
local out_tok, cost = tonumber(ARGV[5]), tonumber(ARGV[6])
local now, w_out, nbands = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local r = km(model, 'req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'tenant', 'in_tokens', 'weight', 'cancel')
if f[1] == 'done' then return {'ALREADY'} end
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local tenant = f[3]
redis.call('ZREM', km(model, 'leases'), id)
redis.call('HSET', r, 'state', 'done', 'owner', '', 'out_tokens', out_tok, 'cost', cost, 'done_ms', now)
charge_service(model, tenant, w_out * out_tok / tonumber(f[5]), nbands)
local reason = ARGV[11]
if f[6] == '1' then reason = 'cancelled' end
if ARGV[12] ~= '' then
  local s = km(model, 'stream', id)
  for _, e in ipairs(cjson.decode(ARGV[12])) do redis.call('XADD', s, '*', unpack(e)) end
end
finish_stream(model, id, tonumber(ARGV[10]), 'type', 'done', 'finish_reason', reason,
  'input_tokens', f[4], 'output_tokens', tostring(out_tok), 'cost_nusd', tostring(cost))
local settled = settle_or_owe(model, id, tenant, true, cost, out_tok, tonumber(now), tonumber(ARGV[10]))
local nxt = false
if ARGV[13] then
  nxt = lease_next(model, nbands, tonumber(now), tonumber(ARGV[13]), owner, tonumber(ARGV[14]), tonumber(ARGV[15]),
    tonumber(ARGV[16] or ARGV[9]), ARGV[17], ARGV[18] == '1') or false
end
local out = {'OK', settled and tostring(settled[1]) or '-1', tenant, nxt}
if settled then
  for _, v in ipairs(settled[2] or {}) do out[#out + 1] = v end
end
return out
