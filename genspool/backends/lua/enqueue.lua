-- enqueue: ARGV[2..] holds one JSON object per job: its hash fields, every value a string.
-- Returns per job 0 when stored now, or the stored job (same id, or same tenant and
-- idempotency key) that the caller gets instead.
local out, models, idem = {}, {}, P .. ':idem'
for i = 2, #ARGV do
  local t = cjson.decode(ARGV[i])
  local stored = false
  if redis.call('EXISTS', job_key(t.id)) == 1 then
    stored = t.id -- sent again, e.g. by a call retried after its reply was lost
  elseif t.idempotency_key then
    local field = idem_field(t.tenant, t.idempotency_key)
    stored = redis.call('HGET', idem, field)
    if not stored then
      redis.call('HSET', idem, field, t.id)
    end
  end
  if stored then
    out[#out + 1] = read(stored)
  else
    local hash = {}
    for field, value in pairs(t) do
      hash[#hash + 1] = field
      hash[#hash + 1] = value
    end
    redis.call('HSET', job_key(t.id), unpack(hash))
    local due = tonumber(t.available_at) <= tonumber(t.created_at) -- else a scheduled job
    make_ready(t.id, t.model, t.priority, t.rank, t.available_at, t.expires_at, due)
    zadd(P .. ':ids', 0, t.id)
    zadd(P .. ':ids:status:queued', 0, t.id)
    zadd(P .. ':ids:model:' .. t.model, 0, t.id)
    zadd(P .. ':ids:tenant:' .. t.tenant, 0, t.id)
    count('queued', t.model, 1)
    models[t.model] = models[t.model] or due
    out[#out + 1] = 0
  end
end
flush()
wake(models)
return out
