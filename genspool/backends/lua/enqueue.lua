-- enqueue: ARGV[3] = now (the caller's clock: only which waiting line a job starts in), then
-- one JSON object per job: its hash fields, every value a string. Returns per job 0 when
-- stored now, or the stored job (same id, or same tenant and idempotency key) that the caller
-- gets instead.
local now = tonumber(ARGV[3])
local out, models, idem = {}, {}, P .. ':idem'
for i = 4, #ARGV do
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
    local due = reindex(t.id, nil, t, now)
    models[t.model] = models[t.model] or due
    out[#out + 1] = 0
  end
end
flush()
wake(models)
return out
