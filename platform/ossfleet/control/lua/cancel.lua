-- cancel: by the owning tenant only. A waiting request leaves its queue at
-- once and is refunded; a running one is flagged, and its replica stops it
-- and completes it with what it generated.
-- ARGV: P model id tenant now_ms stream_ttl_s
-- Returns {'CANCELLED'} | {'CANCELLING'} | {'FINISHED', state} | {'NOT_FOUND'}
local model, id, tenant = ARGV[2], ARGV[3], ARGV[4]
local r = km(model, 'req', id)
local f = redis.call('HMGET', r, 'tenant', 'state', 'band')
-- Another tenant's request is reported as missing: its existence is not theirs to learn.
if f[1] ~= tenant then return {'NOT_FOUND'} end
local state, band = f[2], f[3]
if state == 'queued' then
  local lane = km(model, 'lane', band, tenant)
  redis.call('LREM', lane, 1, id)
  if redis.call('LLEN', lane) == 0 then redis.call('ZREM', km(model, 'ready', band), tenant) end
  redis.call('ZREM', km(model, 'wait', band), id)
elseif state == 'delayed' then
  redis.call('ZREM', km(model, 'delayed'), id)
elseif state == 'leased' then
  redis.call('HSET', r, 'cancel', '1')
  redis.call('PUBLISH', km(model, 'cancel'), id)
  return {'CANCELLING'}
else
  return {'FINISHED', state}
end
redis.call('HSET', r, 'state', 'cancelled', 'done_ms', ARGV[5])
finish_stream(model, id, tonumber(ARGV[6]), 'type', 'done', 'finish_reason', 'cancelled',
  'input_tokens', '0', 'output_tokens', '0', 'cost_nusd', '0')
settle_or_owe(model, id, tenant, false, 0, 0, tonumber(ARGV[5]), tonumber(ARGV[6]))
return {'CANCELLED'}
