-- range: ARGV[3..] = index ('leased' or 'expiring'), max score (Redis syntax: '(' excludes
-- it), limit. The jobs of that index scored up to max, lowest score first: stale_leases reads
-- the running jobs by lease_expires_at, overdue the waiting jobs by expires_at.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':' .. ARGV[3], '-inf', ARGV[4],
  'LIMIT', 0, ARGV[5])) do
  local job = read(id)
  if job[1] then
    out[#out + 1] = job
  end
end
return out
