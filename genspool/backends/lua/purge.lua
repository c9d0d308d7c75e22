-- purge: ARGV[3..] = finished_before, limit, then the statuses to purge. Deletes jobs in those
-- statuses that finished before the given time, at most limit index entries looked at.
-- Returns {index entries looked at, jobs deleted}.
local before, budget, purged, looked = '(' .. ARGV[3], tonumber(ARGV[4]), 0, 0
local idem, outbox = P .. ':idem', P .. ':outbox'
for s = 5, #ARGV do
  local finished = P .. ':finished:' .. ARGV[s]
  local ids = redis.call('ZRANGEBYSCORE', finished, '-inf', before, 'LIMIT', 0, budget - looked)
  looked = looked + #ids
  for _, id in ipairs(ids) do
    local old = read_indexed(id)
    if old and old.status == ARGV[s] and redis.call('ZSCORE', outbox, id) then
      -- not copied to the store yet: it stays until maintenance has copied it
    elseif old and old.status == ARGV[s] then
      redis.call('UNLINK', job_key(id))
      reindex(id, old, nil, 0)
      if old.idempotency_key then
        local field = idem_field(old.tenant, old.idempotency_key)
        if redis.call('HGET', idem, field) == id then
          redis.call('HDEL', idem, field)
        end
      end
      purged = purged + 1
    else
      zrem(finished, id)
    end
  end
  if looked >= budget then
    break
  end
end
flush()
return {looked, purged}
