-- expired_leases: ARGV = P, now, limit. Running jobs whose lease ran out, oldest lease first.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':leased', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, ARGV[3])) do
  local job = read(id)
  if job[6] == 'running' then
    out[#out + 1] = job
  end
end
return out
