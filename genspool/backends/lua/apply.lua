-- apply: ARGV[3] = now (the caller's clock: only which waiting line a job goes to), ARGV[4] =
-- the batch (changes_arg in redis/_codec.py): per change its id, the expected stored status,
-- the expected stored lease token ('' for none), the new status, available_at, finished_at and
-- lease_expires_at ('' for none), how many fields to set and to clear, the (field, value)
-- pairs to set, the fields to clear; each ended by a NUL byte. Writes each change whose job
-- still has the expected status and token (the fence), moves it between the indexes, and
-- returns the ids written; wakes the idle workers of models that got work due now.
local HEAD, runs = 'sssssssss', {}
local function run_format(n) -- struct.unpack's format of n strings, made once per length
  runs[n] = runs[n] or string.rep('s', n)
  return runs[n]
end

local now = tonumber(ARGV[3])
local batch, pos = ARGV[4], 1
local written, models, seen = {}, {}, {}
while pos <= #batch do
  local id, status, token, to, available_at, finished_at, lease_expires_at, nset, nclear
  id, status, token, to, available_at, finished_at, lease_expires_at, nset, nclear, pos =
    struct.unpack(HEAD, batch, pos)
  nset, nclear = tonumber(nset), tonumber(nclear)
  local fields = {struct.unpack(run_format(nset + nclear), batch, pos)}
  pos = fields[#fields]
  if seen[id] then
    flush() -- changed twice in one batch: the second change moves what the first one wrote
  end
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'lease_token', 'model', 'finished_at',
    'lease_expires_at')
  if h[1] and h[1] == status and (h[2] or '') == token then
    -- What reindex needs of the job as it was and as it becomes. A change writes none of
    -- model, tenant, priority, rank (expires_at only on a replay), so they are read only where
    -- a waiting line is left or joined: each field read costs the server about as much as the rest of a change.
    local old = {status = h[1], model = h[3], finished_at = h[4] or nil,
      lease_expires_at = h[5] or nil}
    local new = {status = to, model = h[3], available_at = available_at,
      finished_at = finished_at ~= '' and finished_at or nil,
      lease_expires_at = lease_expires_at ~= '' and lease_expires_at or nil}
    if WAITING[h[1]] or WAITING[to] then
      local line = redis.call('HMGET', key, 'priority', 'rank', 'expires_at', 'available_at')
      old.priority, old.rank, old.expires_at = line[1], line[2], line[3] or nil
      new.priority, new.rank, new.expires_at = line[1], line[2], line[3] or nil
      old.available_at = line[4]
      -- Only a replay writes expires_at (it clears it): the line joined has the new value.
      for k = 1, nset, 2 do
        if fields[k] == 'expires_at' then new.expires_at = fields[k + 1] end
      end
      for k = nset + 1, nset + nclear do
        if fields[k] == 'expires_at' then new.expires_at = nil end
      end
    end
    redis.call('HSET', key, unpack(fields, 1, nset))
    if nclear > 0 then
      redis.call('HDEL', key, unpack(fields, nset + 1, nset + nclear))
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
