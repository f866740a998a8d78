-- pull: lease the next request of a model (see lease_next in common.lua).
-- ARGV: P model nbands now_ms aging_ms owner lease_ms w_in [pull_bands [exclude_tenants [held_adapters can_load]]]
--   exclude_tenants: comma-separated tenants not to lease from ('' for none): the replica's headroom
--   held_adapters: the replica's loaded adapters, comma-separated (adapter affinity; absent: none served);
--   can_load: '1' when it could load one more
-- Returns nil | {id, payload, attempts, tenant, band, enq_ms}
return lease_next(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9] or ARGV[3]), ARGV[11], ARGV[12] == '1', ARGV[10])
