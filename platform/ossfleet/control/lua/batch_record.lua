-- batch_record: a batch line's result, recorded once, with the job's counts and
-- (dedicated mode, which runs outside the queue) the line's charge. On a cluster the charge is
-- batch_charge.lua's, in the tenant's slot, made first; this script is then called with model ''.
-- ARGV: P opts
-- OPTS: job index kind line cost_nusd tenant period model in_tokens out_tokens release_tenant
--   kind: 'o' (an output line) | 'e' (an error line); model '': a queue-mode line, already charged when its
--   request completed; release_tenant: the tenant whose reservation of this line (batch_reserve.lua) is
--   released with the record, or '' for none.
-- Returns 1 when recorded, 0 when the line already had its result (a redone line).
local o = cjson.decode(ARGV[2])
local job, index = o.job, tostring(o.index)
if redis.call('HSETNX', kg('bres', job), index, o.kind .. o.line) == 0 then return 0 end
redis.call('HINCRBY', kg('batch', job), o.kind == 'o' and 'completed' or 'failed', 1)
if o.release_tenant ~= '' then release_line(o.release_tenant, job, index) end
if o.model ~= '' then
  charge_line(o.tenant, o.period, o.model, o.cost_nusd, o.in_tokens, o.out_tokens)
end
return 1
