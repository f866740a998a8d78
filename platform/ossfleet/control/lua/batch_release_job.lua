-- batch_release_job (the tenant's slot): every reservation a dedicated-mode job still holds (lines that ran
-- but were not recorded: a stop, a cancel, a crash), released when the job's run ends.
-- ARGV: P tenant job
-- Returns the nano-dollars released.
local tenant, job = ARGV[2], ARGV[3]
local total = 0
for _, index in ipairs(redis.call('HKEYS', kt(tenant, 'bresv', job))) do
  total = total + release_line(tenant, job, index)
end
return total
