-- replay: ARGV = P, id, now. Queues a failed job again with no attempts; returns it, or nil
-- when it is not failed.
local id, now = ARGV[2], ARGV[3]
local key = job_key(id)
local h = redis.call('HMGET', key, 'status', 'model', 'priority', 'expires_at', 'rank')
if h[1] ~= 'failed' then
  return false
end
redis.call('HSET', key, 'status', 'queued', 'attempts', 0, 'available_at', now)
redis.call('HDEL', key, 'result', 'error', 'finished_at', 'retried_at')
make_ready(id, h[2], h[3], h[5], now, h[4], true)
restatus(id, h[2], 'failed', 'queued')
flush()
redis.call('PUBLISH', P .. ':work', h[2])
return read(id)
