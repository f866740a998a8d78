-- renew: extend a lease held by `owner`.
-- ARGV: P model id owner now_ms lease_ms
-- Returns {'OK', cancel_requested} | {'LOST', state}
local model, id, owner = ARGV[2], ARGV[3], ARGV[4]
local r = km(model, 'req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'cancel')
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local deadline = tonumber(ARGV[5]) + tonumber(ARGV[6])
redis.call('HSET', r, 'lease_ms', deadline)
redis.call('ZADD', km(model, 'leases'), deadline, id)
return {'OK', f[3] or '0'}
