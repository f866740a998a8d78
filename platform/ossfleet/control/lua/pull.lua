-- pull: lease the next request of a model (see lease_next in common.lua).
-- ARGV: P opts
-- OPTS: model nbands now_ms aging_ms owner lease_ms w_in pull_bands [exclude] [held can_load]
--   pull_bands: the bands looked at (nbands, or one fewer to leave the batch band alone);
--   exclude: comma-separated tenants not to lease from: the replica's headroom;
--   held: the replica's loaded adapters, comma-separated (adapter affinity; absent: none served);
--   can_load: true when it could load one more
-- Returns nil | {id, payload, attempts, tenant, band, enq_ms}
return lease_next_opts(cjson.decode(ARGV[2]))
