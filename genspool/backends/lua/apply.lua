-- apply: ARGV[3] = now (the caller's clock: only which waiting line a job goes to), then per
-- change: id, the expected stored status, the expected stored lease token ('' for none), and
-- the new values of WRITTEN ('' for none). Writes each change whose job still has the
-- expected status and token (the fence), moves it between the indexes, and returns the ids
-- written; wakes the idle workers of models that got work due now.
local WRITTEN = { -- WRITTEN in redis/_codec.py
  'status', 'attempts', 'available_at', 'started_at', 'retried_at', 'finished_at',
  'lease_token', 'lease_expires_at', 'result', 'error',
}
local now = tonumber(ARGV[3])
local stride = 3 + #WRITTEN
local written, models, seen = {}, {}, {}
for i = 4, #ARGV, stride do
  local id = ARGV[i]
  if seen[id] then
    flush() -- changed twice in one batch: the second change moves what the first one wrote
  end
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'lease_token', unpack(INDEXED))
  local old = indexed_of(h, 2)
  if old and old.status == ARGV[i + 1] and (h[1] or '') == ARGV[i + 2] then
    local set, del, new = {}, {}, {}
    for name, value in pairs(old) do
      new[name] = value
    end
    for k, name in ipairs(WRITTEN) do
      local value = ARGV[i + 2 + k]
      if value == '' then
        del[#del + 1] = name
        new[name] = nil
      else
        set[#set + 1] = name
        set[#set + 1] = value
        new[name] = value
      end
    end
    redis.call('HSET', key, unpack(set)) -- never empty: a status is always written
    if #del > 0 then
      redis.call('HDEL', key, unpack(del))
    end
    if reindex(id, old, new, now) then
      models[new.model] = true
    end
    seen[id] = true
    written[#written + 1] = id
  end
end
flush()
wake(models)
return written
