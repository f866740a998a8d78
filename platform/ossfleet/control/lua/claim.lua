-- claim (a cluster, the model's slot): the reconciler asks whether a pending reservation's request was
-- enqueued; if not, it marks the id aborted, so that a late enqueue of it is refused, and the caller gives
-- the reservation back (unreserve.lua).
-- ARGV: P model id ttl_s
-- Returns 'ENQUEUED' | 'ABORTED'
local r = km(ARGV[2], 'req', ARGV[3])
local state = redis.call('HGET', r, 'state')
if state and state ~= 'aborted' then return 'ENQUEUED' end
redis.call('HSET', r, 'state', 'aborted')
redis.call('EXPIRE', r, tonumber(ARGV[4]))
return 'ABORTED'
