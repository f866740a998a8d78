-- pull: lease the next request of a model.
-- Highest band (0) first, unless a lower band holds a request older than the
-- aging bound, which then goes first. Within a band, the backlogged tenant
-- with the least weighted service; FIFO within a tenant.
-- ARGV: P model nbands now_ms aging_ms owner lease_ms w_in
-- Returns nil | {id, payload, attempts, tenant, band, enq_ms}
local model = ARGV[2]
local nbands, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local aging_ms = tonumber(ARGV[5])
local owner, lease_ms, w_in = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])

local top, aged_band, aged_id, aged_score = nil, nil, nil, nil
for b = 0, nbands - 1 do
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
local id = redis.call('LPOP', lane)
if redis.call('LLEN', lane) == 0 then redis.call('ZREM', k('ready', model, band), tenant) end
redis.call('ZREM', k('wait', model, band), id)

local r = k('req', id)
local attempts = redis.call('HINCRBY', r, 'attempts', 1)
local deadline = now + lease_ms
redis.call('HSET', r, 'state', 'leased', 'owner', owner, 'lease_ms', deadline)
redis.call('ZADD', k('leases', model), deadline, id)
local f = redis.call('HMGET', r, 'payload', 'in_tokens', 'weight', 'enq_ms')
charge_service(model, tenant, w_in * tonumber(f[2]) / tonumber(f[3]), nbands)
return {id, f[1], attempts, tenant, tonumber(band), f[4]}
