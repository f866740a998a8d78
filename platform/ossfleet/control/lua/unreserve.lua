-- unreserve (a cluster, the tenant's slot): undo a reservation whose enqueue was refused or abandoned:
-- the budget's reservation, the rate counters it used, its in-flight entries, its idempotency key. Once
-- per request (its reservation record goes); a settled one is left alone.
-- ARGV: P tenant id...
-- Returns the number of reservations undone
local tenant = ARGV[2]
local undone = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local rk = kt(tenant, 'resv', id)
  local f = redis.call('HMGET', rk, 'period', 'reserved', 'minute', 'tokens', 'rated', 'idem', 'settled')
  if f[1] and f[7] ~= '1' then
    local reserved = tonumber(f[2])
    if reserved ~= 0 then redis.call('HINCRBY', kt(tenant, 'budget', f[1]), 'reserved', -reserved) end
    if f[5] == '1' then
      local req_k, tok_k = kt(tenant, 'rl', 'req', f[3]), kt(tenant, 'rl', 'tok', f[3])
      if redis.call('EXISTS', req_k) == 1 then redis.call('DECRBY', req_k, 1) end
      if redis.call('EXISTS', tok_k) == 1 then redis.call('DECRBY', tok_k, tonumber(f[4])) end
    end
    if f[6] and f[6] ~= '' then redis.call('DEL', kt(tenant, 'idem', f[6])) end
    redis.call('ZREM', kt(tenant, 'inflight'), id)
    redis.call('ZREM', kt(tenant, 'pending'), id)
    redis.call('DEL', rk)
    undone = undone + 1
  end
end
return undone
