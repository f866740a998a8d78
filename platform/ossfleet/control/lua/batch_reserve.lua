-- batch_reserve (the tenant's slot): a dedicated-mode batch line's most it can cost, reserved before it runs,
-- like a queue-mode request's at admission; batch_record.lua (batch_charge.lua on a cluster) releases it
-- when the line's result is recorded, batch_release_job.lua whatever a stopped job left.
-- ARGV: P tenant job index amount_nusd period limit_nusd(-1: none)
-- Returns 1 when reserved (or already, for a redone line), 0 when the budget cannot hold it.
local tenant, job, index, amount, period = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local limit = tonumber(ARGV[7])
local held = kt(tenant, 'bresv', job)
if redis.call('HEXISTS', held, index) == 1 then return 1 end
local budget = kt(tenant, 'budget', period)
if limit >= 0 then
  local f = redis.call('HMGET', budget, 'reserved', 'spent')
  if (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0) + amount > limit then return 0 end
end
redis.call('HINCRBY', budget, 'reserved', amount)
redis.call('HSET', held, index, period .. ' ' .. string.format('%d', amount))
redis.call('EXPIRE', held, 40 * 86400)
return 1
