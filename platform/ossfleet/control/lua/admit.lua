-- admit (a single Redis): rate limits, queue bound, budget reservation, enqueue. All or nothing. On a
-- cluster the same steps run as reserve (the tenant's slot), then enqueue (the model's slot).
-- ARGV: P opts payload...
--   opts: one JSON object with the fields OPTS names; payload: each request's (prompt ids, sampling), in
--   the order of opts.group.
-- OPTS: tenant model band now_ms idem max_queue budget_limit_nusd period rpm tpm nbands weight alert_at_nusd
--       max_inflight inflight_ttl_ms track_inflight count_rate adapter usage_name group
--   budget_limit_nusd: -1 for no limit; max_inflight: 0 for no limit; track_inflight false: a batch line,
--   which does not count against the tenant's concurrent streams; count_rate false: a batch line, which
--   neither meets nor uses up the tenant's rpm/tpm; adapter: the LoRA adapter's cache key, or '' (pull.lua
--   prefers replicas that hold it); usage_name: what usage is recorded under ('': the model);
--   group: [{id, in_tokens, max_tokens, reserve_nusd}, ...]: the request, then the rest of a group admitted
--   all or nothing (n choices, a list of prompts).
-- The limits apply to the group's sums: requests, tokens, streams, queue slots, reservation.
-- Returns {'OK', ids} (ids joined by ',') | {'DUP', id} | {'RATE', what, retry_ms} | {'RATE_NEVER', what, limit}
--       | {'QUEUE_FULL', depth} | {'BUDGET', left_nusd} | {'CONCURRENCY', in_flight}
local o = cjson.decode(ARGV[2])
local now = tonumber(o.now_ms)
local group, tokens, total_reserve, joined = admission(o, 3)
local refusal, req_k, tok_k = reserve_check(o, #group, tokens, total_reserve, now)
if refusal then return refusal end
refusal = enqueue_check(o, #group)
if refusal then return refusal end
-- Accepted: from here on every write happens.
reserve_write(o, group, tokens, total_reserve, now, req_k, tok_k, joined)
enqueue_write(o, group, now)
return {'OK', joined}
