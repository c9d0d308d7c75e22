-- extend: ARGV[3..] = until, then (id, lease token) pairs. Returns how many leases were held.
-- Every transition out of a lease clears its token, so a matching token is a held lease.
local untl, n = ARGV[3], 0
for i = 4, #ARGV, 2 do
  local id, key = ARGV[i], job_key(ARGV[i])
  if ARGV[i + 1] ~= '' and redis.call('HGET', key, 'lease_token') == ARGV[i + 1] then
    redis.call('HSET', key, 'lease_expires_at', untl)
    zadd(P .. ':leased', untl, id)
    n = n + 1
  end
end
flush()
return n
