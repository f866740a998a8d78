-- complete: ack a lease, settle the actual cost (refunding the rest of the reservation, recording usage;
-- on a cluster the tenant's side is settle.lua, called next), charge fair-share service, end the stream.
-- ARGV: P opts
-- OPTS: model id owner out_tokens cost_nusd now_ms w_out nbands stream_ttl_s finish_reason [events]
--       [aging_ms lease_ms w_in pull_bands [held can_load]]: with lease_ms, also lease the owner's next
--   request of the same model in the same call (the slot this completion frees; pull.lua's OPTS);
--   events: the request's last output events, a list of flat [name, value, ...] lists, written to its
--   stream before the end (one round trip fewer than emitting them first).
-- When this spend crosses the tenant's soft-alert mark for the period, one event goes to the `alerts`
-- stream (once per tenant and period).
-- Returns {'OK', spent_nusd, tenant, next_lease|false, alert...} (spent_nusd -1 on a cluster, where the
-- settlement comes next) | {'ALREADY'} | {'LOST', state}
local o = cjson.decode(ARGV[2])
local model, id, owner = o.model, o.id, o.owner
local out_tok, cost, now = o.out_tokens, o.cost_nusd, o.now_ms
local r = km(model, 'req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'tenant', 'in_tokens', 'weight', 'cancel', 'enq_ms',
  'first_lease_ms')
if f[1] == 'done' then return {'ALREADY'} end
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local tenant = f[3]
redis.call('ZREM', km(model, 'leases'), id)
redis.call('HSET', r, 'state', 'done', 'owner', '', 'out_tokens', out_tok, 'cost', cost, 'done_ms', now)
charge_service(model, tenant, o.w_out * out_tok / tonumber(f[5]), o.nbands)
local reason = o.finish_reason
if f[6] == '1' then reason = 'cancelled' end
if o.events then
  local s = km(model, 'stream', id)
  for _, e in ipairs(o.events) do redis.call('XADD', s, '*', unpack(e)) end
end
-- queued_ms: admission to first lease (the gateways' comparison separates the wait from the engine's time).
local queued = '0'
if f[7] and f[8] then queued = tostring(math.max(0, tonumber(f[8]) - tonumber(f[7]))) end
finish_stream(model, id, o.stream_ttl_s, 'type', 'done', 'finish_reason', reason,
  'input_tokens', f[4], 'output_tokens', tostring(out_tok), 'cost_nusd', tostring(cost), 'queued_ms', queued)
local settled = settle_or_owe(model, id, tenant, true, cost, out_tok, now, o.stream_ttl_s)
local nxt = false
if o.lease_ms then nxt = lease_next_opts(o) or false end
local out = {'OK', settled and tostring(settled[1]) or '-1', tenant, nxt}
if settled then
  for _, v in ipairs(settled[2] or {}) do out[#out + 1] = v end
end
return out
