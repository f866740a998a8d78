-- settle (a cluster, the tenant's slot): the tenant's side of a request that ended in its model's slot
-- (complete, fail, cancel, reap): give back the reservation and, for a charge, spend the cost and record
-- usage. Idempotent by request id (see settle() in common.lua).
-- ARGV: P tenant id kind cost_nusd out_tokens ttl_s
--   kind: 'charge' | 'refund'
-- Returns {'OK', spent_nusd, alert...} (alert: the soft-alert event's fields when this spend crossed the
-- mark; the caller writes it to the alerts stream) | {'ALREADY'}
local res = settle(ARGV[2], ARGV[3], ARGV[4] == 'charge', tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
if res == nil then return {'ALREADY'} end
local out = {'OK', tostring(res[1])}
for _, v in ipairs(res[2] or {}) do out[#out + 1] = v end
return out
