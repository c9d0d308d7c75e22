-- lease: ARGV[3..] = model, limit, now, until, token, running status, attempts step, worker
-- ('' for none) (a LeaseSpec; ARGV[2] holds its waiting statuses). Returns the leased jobs in the order they
-- were taken: highest priority first, then lowest rank, then oldest available_at.
local model, limit, now, untl, token = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local running, step, worker = ARGV[8], ARGV[9], ARGV[10]
local nnow = tonumber(now)
local prios, delayed = P .. ':prios:' .. model, P .. ':delayed:' .. model

-- Jobs whose available_at has come join the ready sets first. At most this many per call, so
-- a huge backlog that fell due at once is moved over several calls.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000 + limit)
for _, id in ipairs(due) do
  local h = redis.call('HMGET', job_key(id), 'status', 'priority', 'rank', 'available_at')
  if WAITING[h[1]] then
    redis.call('ZADD', ready_key(model, h[2]), h[3], ready_member(id, h[4]))
    redis.call('ZADD', prios, h[2], h[2])
  end
end
call_in_slices('ZREM', delayed, due)

local out = {}
for _, prio in ipairs(redis.call('ZREVRANGE', prios, 0, -1)) do
  local ready = ready_key(model, prio)
  while #out < limit do
    local members = redis.call('ZRANGE', ready, 0, math.min(limit - #out, 1000) - 1)
    if #members == 0 then
      break
    end
    redis.call('ZREM', ready, unpack(members))
    for _, member in ipairs(members) do
      local id = string.sub(member, 17)
      local key = job_key(id)
      local h = redis.call('HMGET', key, 'status', 'expires_at', 'available_at')
      if not WAITING[h[1]] then
        -- a stale entry: nothing to do
      elseif h[2] and tonumber(h[2]) <= nnow then
        -- Past expires_at: it leaves the ready set but stays waiting, for overdue() to find
        -- through the expiring index.
      elseif tonumber(h[3]) > nnow then
        zadd(delayed, h[3], id) -- made ready by a caller whose clock is ahead of ours
      else
        if worker ~= '' then
          redis.call('HSET', key, 'status', running, 'lease_token', token,
            'lease_expires_at', untl, 'started_at', now, 'worker', worker)
        else
          redis.call('HSET', key, 'status', running, 'lease_token', token,
            'lease_expires_at', untl, 'started_at', now)
          redis.call('HDEL', key, 'worker')
        end
        redis.call('HINCRBY', key, 'attempts', step)
        zadd(P .. ':leased', untl, id)
        mark(id, now)
        if h[2] then
          zrem(P .. ':expiring', id)
        end
        zrem(P .. ':ids:status:' .. h[1], id)
        zadd(P .. ':ids:status:' .. running, 0, id)
        count(h[1], model, -1)
        count(running, model, 1)
        out[#out + 1] = id
      end
    end
  end
  drop_empty_prio(model, prio)
  if #out >= limit then
    break
  end
end
flush()
for k, id in ipairs(out) do
  out[k] = read(id)
end
return out
