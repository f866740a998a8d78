-- reserve (a cluster, the tenant's slot): admit's first step. Rate limits, in-flight limit, budget; when
-- all pass, the reservation, recorded as pending until its enqueue is seen (enqueue.lua, then the
-- reconciler or the settlement).
-- ARGV: P opts
--   opts: admit's options object (see admit.lua's OPTS)
-- Returns {'OK', ids} | {'DUP', ids} | {'RATE', what, retry_ms} | {'RATE_NEVER', what, limit}
--       | {'BUDGET', left_nusd} | {'CONCURRENCY', in_flight}
local o = cjson.decode(ARGV[2])
local now = tonumber(o.now_ms)
local group, tokens, total_reserve, joined = admission(o, nil)
local refusal, req_k, tok_k = reserve_check(o, #group, tokens, total_reserve, now)
if refusal then return refusal end
reserve_write(o, group, tokens, total_reserve, now, req_k, tok_k, joined)
return {'OK', joined}
