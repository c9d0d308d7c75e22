-- finish: ARGV = P, now, then per outcome: id, lease token, status, result, error,
-- available_at ('' for none). Applies the outcomes whose lease is still held (status running
-- and the same token) and returns their ids.
local now, applied, models = ARGV[2], {}, {}
for i = 3, #ARGV, 6 do
  local id, token, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local result, err, available_at = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'lease_token', 'model', 'priority', 'expires_at',
    'available_at', 'rank')
  if h[1] == 'running' and h[2] == token then
    local model = h[3]
    zrem(P .. ':leased', id)
    redis.call('HDEL', key, 'lease_token', 'lease_expires_at')
    redis.call('HSET', key, 'status', status)
    if result ~= '' then
      redis.call('HSET', key, 'result', result)
    else
      redis.call('HDEL', key, 'result')
    end
    if err ~= '' then
      redis.call('HSET', key, 'error', err)
    else
      redis.call('HDEL', key, 'error')
    end
    if available_at ~= '' then
      redis.call('HSET', key, 'available_at', available_at)
    else
      available_at = h[6]
    end
    if status == 'queued' then -- a release: the attempt does not count
      redis.call('HINCRBY', key, 'attempts', -1)
    elseif status == 'retrying' then
      redis.call('HSET', key, 'retried_at', now)
    end
    if WAITING[status] then
      redis.call('HDEL', key, 'finished_at')
      local due = tonumber(available_at) <= tonumber(now)
      make_ready(id, model, h[4], h[7], available_at, h[5], due)
      models[model] = models[model] or due -- a backoff that ends later is found by polling
    else
      redis.call('HSET', key, 'finished_at', now)
      if ENDED[status] then
        zadd(P .. ':finished', now, id)
      end
    end
    restatus(id, model, 'running', status)
    applied[#applied + 1] = id
  end
end
flush()
wake(models)
return applied
