-- Prepended to every script of the Redis backend. ARGV[1] is the key prefix; every key is
-- built from it here, so the scripts run on one Redis server, not on a cluster.
--
-- Scores and timestamps arrive as strings (Python's repr of a float) and are passed on to
-- Redis as they came: a Lua number given to redis.call is printed with 14 digits, which would
-- cut an epoch time to 0.1 ms.
local P = ARGV[1]

-- The order of a job's fields in every reply (FIELDS in redis.py).
local FIELDS = {
  'id', 'tenant', 'url', 'model', 'body', 'status', 'priority', 'attempts', 'max_attempts',
  'idempotency_key', 'metadata', 'expires_at', 'created_at', 'available_at', 'started_at',
  'retried_at', 'finished_at', 'lease_token', 'lease_expires_at', 'result', 'error', 'rank',
}
local WAITING = {queued = true, retrying = true}
local COUNTED = {queued = true, retrying = true, running = true} -- what depth() reports
local ENDED = {succeeded = true, cancelled = true, expired = true} -- purged after their TTL

local function job_key(id)
  return P .. ':job:' .. id
end

local function read(id)
  return redis.call('HMGET', job_key(id), unpack(FIELDS))
end

-- The idempotency hash's field: the tenant's length keeps (tenant, key) pairs apart.
local function idem_field(tenant, key)
  return string.len(tenant) .. ':' .. tenant .. ':' .. key
end

-- Sorted-set writes and counter changes are gathered while a script runs and written by
-- flush() at its end, one command per key: a batch mostly touches the same few keys. Removals
-- are written before additions; no script removes a member it added to the same key.
local zadds, zrems, deltas = {}, {}, {}

local function zadd(key, score, member)
  local list = zadds[key]
  if not list then
    list = {}
    zadds[key] = list
  end
  list[#list + 1] = score
  list[#list + 1] = member
end

local function zrem(key, member)
  local list = zrems[key]
  if not list then
    list = {}
    zrems[key] = list
  end
  list[#list + 1] = member
end

local function count(status, model, delta)
  if COUNTED[status] then
    local field = status .. ':' .. model
    deltas[field] = (deltas[field] or 0) + delta
  end
end

-- unpack() is limited by the Lua stack, so long lists go out in slices (of even length).
local function call_in_slices(command, key, list)
  for s = 1, #list, 1000 do
    redis.call(command, key, unpack(list, s, math.min(s + 999, #list)))
  end
end

-- Wake idle workers of every model in ``models`` (model -> whether it has work due now).
local function wake(models)
  for model, due in pairs(models) do
    if due then
      redis.call('PUBLISH', P .. ':work', model)
    end
  end
end

local function flush()
  for key, list in pairs(zrems) do
    call_in_slices('ZREM', key, list)
  end
  for key, list in pairs(zadds) do
    call_in_slices('ZADD', key, list)
  end
  for field, delta in pairs(deltas) do
    if delta ~= 0 and redis.call('HINCRBY', P .. ':depth', field, delta) <= 0 then
      redis.call('HDEL', P .. ':depth', field)
    end
  end
  zadds, zrems, deltas = {}, {}, {}
end

-- A job changed status: move it between the status indexes of list_jobs and the counters.
local function restatus(id, model, old, new)
  zrem(P .. ':ids:status:' .. old, id)
  zadd(P .. ':ids:status:' .. new, 0, id)
  count(old, model, -1)
  count(new, model, 1)
end

-- A float as 16 hex digits that sort as the numbers do (IEEE 754 bits, sign flipped).
local function sortable(x)
  local b = {string.byte(struct.pack('>d', tonumber(x)), 1, 8)}
  if b[1] >= 128 then
    for i = 1, 8 do
      b[i] = 255 - b[i]
    end
  else
    b[1] = b[1] + 128
  end
  return string.format(string.rep('%02x', 8), unpack(b))
end

-- Waiting jobs that are due sit in one ZSET per (model, priority) scored by rank, the member
-- being sortable(available_at) .. id, so equal ranks go by available_at; a ZSET of the
-- priorities present lets a lease walk them downwards. Jobs not yet due (a retry's backoff, a
-- scheduled job) wait in a ZSET per model scored by available_at, which lease drains.
local function ready_key(model, prio)
  return P .. ':ready:' .. model .. ':' .. prio
end

local function ready_member(id, available_at)
  return sortable(available_at) .. id
end

local function make_ready(id, model, prio, rank, available_at, expires_at, due)
  if due then
    zadd(ready_key(model, prio), rank, ready_member(id, available_at))
    zadd(P .. ':prios:' .. model, prio, prio)
  else
    zadd(P .. ':delayed:' .. model, available_at, id)
  end
  if expires_at then
    zadd(P .. ':expiring', expires_at, id)
  end
end

local function drop_empty_prio(model, prio)
  if redis.call('EXISTS', ready_key(model, prio)) == 0 then
    redis.call('ZREM', P .. ':prios:' .. model, prio)
  end
end

-- Written at once (not gathered): lease reads the ready sets as it goes.
local function unready(id, model, prio, available_at)
  if redis.call('ZREM', ready_key(model, prio), ready_member(id, available_at)) == 1 then
    drop_empty_prio(model, prio)
  end
  redis.call('ZREM', P .. ':delayed:' .. model, id)
  redis.call('ZREM', P .. ':expiring', id)
end
