-- enqueue (a cluster, the model's slot): admit's second step, after reserve. Idempotent by request id:
-- a group already enqueued answers OK again; one the reconciler gave up on (claim.lua) answers ABORTED,
-- and its reservation is (or will be) given back.
-- ARGV: P opts payload...
--   opts: admit's options object; payload: each request's, in the order of opts.group
-- Returns {'OK'} | {'QUEUE_FULL', depth} | {'ABORTED'}
local o = cjson.decode(ARGV[2])
local now = tonumber(o.now_ms)
local group = admission(o, 3)
local state = redis.call('HGET', km(o.model, 'req', group[1].id), 'state')
if state == 'aborted' then return {'ABORTED'} end
if state then return {'OK'} end
local refusal = enqueue_check(o, #group)
if refusal then return refusal end
enqueue_write(o, group, now)
return {'OK'}
