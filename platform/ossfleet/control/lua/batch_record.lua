-- batch_record: a batch line's result, recorded once, with the job's counts and
-- (dedicated mode, which runs outside the queue) the line's charge. On a cluster the charge is
-- batch_charge.lua's, in the tenant's slot, made first; this script is then called with model ''.
-- ARGV: P job index kind('o'|'e') line cost_nusd tenant period model in_tokens out_tokens release_tenant
-- A model of '' is a queue-mode line, already charged when its request completed. release_tenant is the
-- tenant whose reservation of this line (batch_reserve.lua) is released with the record, or '' for none.
-- Returns 1 when recorded, 0 when the line already had its result (a redone line).
local job, index, kind = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HSETNX', kg('bres', job), index, kind .. ARGV[5]) == 0 then return 0 end
redis.call('HINCRBY', kg('batch', job), kind == 'o' and 'completed' or 'failed', 1)
if ARGV[12] ~= '' then release_line(ARGV[12], job, index) end
if ARGV[9] ~= '' then
  charge_line(ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[6]), tonumber(ARGV[10]), tonumber(ARGV[11]))
end
return 1
