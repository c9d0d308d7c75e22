-- apply: ARGV[3] = now (the caller's clock: only which waiting line a job goes to), ARGV[4] =
-- the batch: per change its id, the expected stored status, the expected stored lease token
-- ('' for none) and the new values of WRITTEN ('' for none), each ended by a NUL byte. Writes
-- each change whose job still has the expected status and token (the fence), moves it between
-- the indexes, and returns the ids written; wakes the idle workers of models that got work due
-- now.
local WRITTEN = { -- WRITTEN in redis/_codec.py
  'status', 'attempts', 'available_at', 'started_at', 'retried_at', 'finished_at',
  'lease_token', 'lease_expires_at', 'result', 'error',
}
local UNREAD = {result = true, error = true}
local FORMAT = string.rep('s', 3 + #WRITTEN)
local now = tonumber(ARGV[3])
local batch, pos = ARGV[4], 1
local written, models, seen = {}, {}, {}
while pos <= #batch do
  local f = {struct.unpack(FORMAT, batch, pos)}
  pos = f[#f]
  local id = f[1]
  if seen[id] then
    flush() -- changed twice in one batch: the second change moves what the first one wrote
  end
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'lease_token', 'attempts', 'started_at', 'retried_at',
    unpack(INDEXED))
  local old = indexed_of(h, 5)
  if old and old.status == f[2] and (h[1] or '') == f[3] then
    old.lease_token, old.attempts = h[1] or nil, h[2] or nil
    old.started_at, old.retried_at = h[3] or nil, h[4] or nil
    -- Only what differs is written (most of a job's fields stay as they are), except result
    -- and error, which are not read back to be compared (they may be large).
    local set, del, new = {}, {}, {}
    for name, value in pairs(old) do
      new[name] = value
    end
    for k, name in ipairs(WRITTEN) do
      local value = f[3 + k]
      if value == '' then
        if old[name] or UNREAD[name] then
          del[#del + 1] = name
        end
        new[name] = nil
      else
        if value ~= old[name] then
          set[#set + 1] = name
          set[#set + 1] = value
        end
        new[name] = value
      end
    end
    if #set > 0 then
      redis.call('HSET', key, unpack(set))
    end
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
