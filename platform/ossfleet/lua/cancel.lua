-- cancel: by the owning tenant only. A waiting request leaves its queue at
-- once and is refunded; a running one is flagged, and its replica stops it
-- and completes it with what it generated.
-- ARGV: P id tenant now_ms stream_ttl_s
-- Returns {'CANCELLED'} | {'CANCELLING'} | {'FINISHED', state} | {'NOT_FOUND'}
local id, tenant = ARGV[2], ARGV[3]
local r = k('req', id)
local f = redis.call('HMGET', r, 'tenant', 'state', 'model', 'band')
-- Another tenant's request is reported as missing: its existence is not theirs to learn.
if f[1] ~= tenant then return {'NOT_FOUND'} end
local state, model, band = f[2], f[3], f[4]
if state == 'queued' then
  local lane = k('lane', model, band, tenant)
  redis.call('LREM', lane, 1, id)
  if redis.call('LLEN', lane) == 0 then redis.call('ZREM', k('ready', model, band), tenant) end
  redis.call('ZREM', k('wait', model, band), id)
elseif state == 'delayed' then
  redis.call('ZREM', k('delayed', model), id)
elseif state == 'leased' then
  redis.call('HSET', r, 'cancel', '1')
  redis.call('PUBLISH', k('cancel', model), id)
  return {'CANCELLING'}
else
  return {'FINISHED', state}
end
redis.call('HSET', r, 'state', 'cancelled', 'done_ms', ARGV[4])
refund(id)
finish_stream(id, tonumber(ARGV[5]), 'type', 'done', 'finish_reason', 'cancelled',
  'input_tokens', '0', 'output_tokens', '0', 'cost_nusd', '0')
return {'CANCELLED'}
