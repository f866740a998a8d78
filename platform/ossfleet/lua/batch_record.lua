-- batch_record: a batch line's result, recorded once, with the job's counts and
-- (dedicated mode, which runs outside the queue) the line's charge.
-- ARGV: P job index kind('o'|'e') line cost_nusd tenant period model in_tokens out_tokens
--       (model '': a queue-mode line, already charged when its request completed)
-- Returns 1 when recorded, 0 when the line already had its result (a redone line).
local job, index, kind = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HSETNX', k('bres', job), index, kind .. ARGV[5]) == 0 then return 0 end
redis.call('HINCRBY', k('batch', job), kind == 'o' and 'completed' or 'failed', 1)
local cost = tonumber(ARGV[6])
if ARGV[9] ~= '' then
  local tenant, period, model = ARGV[7], ARGV[8], ARGV[9]
  redis.call('HINCRBY', k('budget', tenant, period), 'spent', cost)
  local usage = k('usage', tenant, period)
  redis.call('HINCRBY', usage, model .. ':requests', 1)
  redis.call('HINCRBY', usage, model .. ':input_tokens', tonumber(ARGV[10]))
  redis.call('HINCRBY', usage, model .. ':output_tokens', tonumber(ARGV[11]))
  redis.call('HINCRBY', usage, 'cost_nusd', cost)
end
return 1
