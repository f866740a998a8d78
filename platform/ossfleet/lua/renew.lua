-- renew: extend a lease held by `owner`.
-- ARGV: P id owner now_ms lease_ms
-- Returns {'OK', cancel_requested} | {'LOST', state}
local id, owner = ARGV[2], ARGV[3]
local r = k('req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'model', 'cancel')
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
local deadline = tonumber(ARGV[4]) + tonumber(ARGV[5])
redis.call('HSET', r, 'lease_ms', deadline)
redis.call('ZADD', k('leases', f[3]), deadline, id)
return {'OK', f[4] or '0'}
