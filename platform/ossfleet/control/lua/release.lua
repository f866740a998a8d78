-- release: a draining replica hands a lease back untouched; the attempt does
-- not count, and the request goes back to the head of its lane.
-- ARGV: P model id owner
-- Returns {'OK'} | {'LOST', state}
local model, id, owner = ARGV[2], ARGV[3], ARGV[4]
local r = km(model, 'req', id)
local f = redis.call('HMGET', r, 'state', 'owner')
if f[1] ~= 'leased' or f[2] ~= owner then return {'LOST', f[1] or 'missing'} end
redis.call('ZREM', km(model, 'leases'), id)
redis.call('HINCRBY', r, 'attempts', -1)
requeue_head(model, id)
return {'OK'}
