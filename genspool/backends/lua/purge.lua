-- purge: ARGV = P, finished_before, limit. Deletes ended jobs (never dead letters) that
-- finished before the given time. Returns {index entries looked at, jobs deleted}.
local ids = redis.call('ZRANGEBYSCORE', P .. ':finished', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, ARGV[3])
local purged = 0
for _, id in ipairs(ids) do
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'tenant', 'model', 'idempotency_key')
  redis.call('ZREM', P .. ':finished', id)
  if ENDED[h[1]] then
    redis.call('UNLINK', key)
    redis.call('ZREM', P .. ':ids', id)
    redis.call('ZREM', P .. ':ids:status:' .. h[1], id)
    redis.call('ZREM', P .. ':ids:model:' .. h[3], id)
    redis.call('ZREM', P .. ':ids:tenant:' .. h[2], id)
    if h[4] then
      local field = idem_field(h[2], h[4])
      if redis.call('HGET', P .. ':idem', field) == id then
        redis.call('HDEL', P .. ':idem', field)
      end
    end
    purged = purged + 1
  end
end
return {#ids, purged}
