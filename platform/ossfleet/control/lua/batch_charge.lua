-- batch_charge (a cluster, the tenant's slot): a dedicated-mode batch line's charge, once per line (a
-- redone line is not charged again), with the release of its reservation, before batch_record.lua records
-- its result.
-- ARGV: P opts
-- OPTS: tenant job index cost_nusd period model in_tokens out_tokens
--   model '': a failed line: its reservation is released and nothing is charged.
-- Returns 1 when charged, 0 when the line was charged before.
local o = cjson.decode(ARGV[2])
local tenant, job, index = o.tenant, o.job, tostring(o.index)
local marks = kt(tenant, 'bcharged', job)
if redis.call('HSETNX', marks, index, '1') == 0 then return 0 end
redis.call('EXPIRE', marks, 40 * 86400)
release_line(tenant, job, index)
if o.model == '' then return 1 end
charge_line(tenant, o.period, o.model, o.cost_nusd, o.in_tokens, o.out_tokens)
return 1
