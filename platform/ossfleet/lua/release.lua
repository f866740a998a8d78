-- release: a draining replica hands a lease back untouched; the attempt does
-- not count, and the request goes back to the head of its lane.
-- ARGV: P id owner
-- Returns {'OK'} | {'LOST', state}
local id, owner = ARGV[2], ARGV[3]
local r = k('req', id)
local f = redis.call('HMGET', r, 'state', 'owner', 'model')
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
redis.call('ZREM', k('leases', f[3]), id)
redis.call('HINCRBY', r, 'attempts', -1)
requeue_head(id)
return {'OK'}
