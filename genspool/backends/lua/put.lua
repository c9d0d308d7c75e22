-- put: ARGV[3] = now (the caller's clock: only which waiting line a job goes to), then one
-- JSON object per job: every hash field it has, as strings. Replaces each stored job with the
-- given record (a whole-record upsert, as a store that mirrors a queue needs) and moves it
-- between the indexes and the idempotency hash.
local now, idem, seen = tonumber(ARGV[3]), P .. ':idem', {}
for i = 4, #ARGV do
  local t = cjson.decode(ARGV[i])
  local id, key = t.id, job_key(t.id)
  if seen[id] then
    flush() -- stored twice in one batch: the second one moves what the first one wrote
  end
  local old = read_indexed(id)
  local hash = {}
  for field, value in pairs(t) do
    hash[#hash + 1] = field
    hash[#hash + 1] = value
  end
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(hash))
  reindex(id, old, t, now)
  if old and old.idempotency_key then
    local field = idem_field(old.tenant, old.idempotency_key)
    if redis.call('HGET', idem, field) == id then
      redis.call('HDEL', idem, field)
    end
  end
  if t.idempotency_key then
    redis.call('HSET', idem, idem_field(t.tenant, t.idempotency_key), id)
  end
  seen[id] = true
end
flush()
return #ARGV - 3
