-- batch_charge (a cluster, the tenant's slot): a dedicated-mode batch line's charge, once per line (a
-- redone line is not charged again), with the release of its reservation, before batch_record.lua records
-- its result.
-- ARGV: P tenant job index cost_nusd period model in_tokens out_tokens
-- A model of '' is a failed line: its reservation is released and nothing is charged.
-- Returns 1 when charged, 0 when the line was charged before.
local tenant, job, index = ARGV[2], ARGV[3], ARGV[4]
local marks = kt(tenant, 'bcharged', job)
if redis.call('HSETNX', marks, index, '1') == 0 then return 0 end
redis.call('EXPIRE', marks, 40 * 86400)
release_line(tenant, job, index)
if ARGV[7] == '' then return 1 end
charge_line(tenant, ARGV[6], ARGV[7], tonumber(ARGV[5]), tonumber(ARGV[8]), tonumber(ARGV[9]))
return 1
