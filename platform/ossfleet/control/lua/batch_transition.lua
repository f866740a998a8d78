-- batch_transition: move a job to a new status if it is in one of the allowed
-- ones, stamping the time; a terminal status takes the job off the active set.
-- ARGV: P job to now_s allowed(comma-separated) stamp_field terminal('1'|'0')
-- Returns {'OK', from} | {'NO', current}
local job, to, now = ARGV[2], ARGV[3], ARGV[4]
local key = kg('batch', job)
local cur = redis.call('HGET', key, 'status')
if not cur then return {'NO', 'missing'} end
local ok = false
for s in string.gmatch(ARGV[5], '[^,]+') do
  if s == cur then ok = true end
end
if not ok then return {'NO', cur} end
redis.call('HSET', key, 'status', to)
if ARGV[6] ~= '' then redis.call('HSET', key, ARGV[6], now) end
if ARGV[7] == '1' then redis.call('SREM', kg('activebatches'), job) end
return {'OK', cur}
