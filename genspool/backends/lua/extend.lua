-- extend: ARGV = P, until, then (id, lease token) pairs. Returns how many leases were held.
local untl, n = ARGV[2], 0
for i = 3, #ARGV, 2 do
  local id, key = ARGV[i], job_key(ARGV[i])
  local h = redis.call('HMGET', key, 'status', 'lease_token')
  if h[1] == 'running' and h[2] == ARGV[i + 1] then
    redis.call('HSET', key, 'lease_expires_at', untl)
    redis.call('ZADD', P .. ':leased', untl, id)
    n = n + 1
  end
end
return n
