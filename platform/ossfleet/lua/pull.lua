-- pull: lease the next request of a model (see lease_next in common.lua).
-- ARGV: P model nbands now_ms aging_ms owner lease_ms w_in [pull_bands]
-- Returns nil | {id, payload, attempts, tenant, band, enq_ms}
return lease_next(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9] or ARGV[3]))
