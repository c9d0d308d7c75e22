-- cancel: ARGV = P, id, now. Returns the cancelled job, or nil when it is unknown or ended.
local id, now = ARGV[2], ARGV[3]
local key = job_key(id)
local h = redis.call('HMGET', key, 'status', 'model', 'priority', 'available_at')
if not (WAITING[h[1]] or h[1] == 'running') then
  return false
end
redis.call('HSET', key, 'status', 'cancelled', 'finished_at', now)
redis.call('HDEL', key, 'lease_token', 'lease_expires_at')
unready(id, h[2], h[3], h[4])
redis.call('ZREM', P .. ':leased', id)
redis.call('ZADD', P .. ':finished', now, id)
restatus(id, h[2], h[1], 'cancelled')
flush()
return read(id)
