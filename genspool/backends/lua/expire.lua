-- expire: ARGV = P, now, limit. Ends waiting jobs whose expires_at <= now. Returns
-- {how many index entries were looked at, the expired jobs}.
local now = ARGV[2]
local ERROR = '{"code":"expired","message":"not started before expires_at"}'
local ids = redis.call('ZRANGEBYSCORE', P .. ':expiring', '-inf', now, 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'model', 'priority', 'available_at')
  redis.call('ZREM', P .. ':expiring', id)
  if WAITING[h[1]] then
    redis.call('HSET', key, 'status', 'expired', 'finished_at', now, 'error', ERROR)
    unready(id, h[2], h[3], h[4])
    zadd(P .. ':finished', now, id)
    restatus(id, h[2], h[1], 'expired')
    out[#out + 1] = id
  end
end
flush()
for k, id in ipairs(out) do
  out[k] = read(id)
end
return {#ids, out}
