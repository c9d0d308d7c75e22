-- Prepended to every script of the Redis backend. Every script gets the same header:
-- ARGV[1] is the key prefix (every key is built from it here, so the scripts run on one Redis
-- server, not on a cluster) and ARGV[2] the statuses in which a job waits to be leased,
-- space-separated, as the core names them (genspool.core.job.WAITING, or a LeaseSpec's): the
-- scripts hold no status names of their own. A script's own arguments start at ARGV[3].
--
-- Scores and timestamps arrive as strings (Python's repr of a float) and are passed on to
-- Redis as they came: a Lua number given to redis.call is printed with 14 digits, which would
-- cut an epoch time to 0.1 ms.
local P = ARGV[1]
local WAITING = {}
for status in string.gmatch(ARGV[2], '%S+') do
  WAITING[status] = true
end

-- The order of a job's fields in every reply (FIELDS in redis/_codec.py).
local FIELDS = {
  'id', 'tenant', 'url', 'model', 'body', 'status', 'priority', 'attempts', 'max_attempts',
  'idempotency_key', 'metadata', 'expires_at', 'created_at', 'available_at', 'started_at',
  'retried_at', 'finished_at', 'lease_token', 'lease_expires_at', 'result', 'error', 'rank',
  'worker', 'history',
}
-- The fields that place a job in the indexes (reindex below reads them by name).
local INDEXED = {
  'status', 'model', 'tenant', 'priority', 'rank', 'available_at', 'expires_at', 'finished_at',
  'lease_expires_at', 'idempotency_key',
}

local function job_key(id)
  return P .. ':job:' .. id
end

local function read(id)
  return redis.call('HMGET', job_key(id), unpack(FIELDS))
end

-- The INDEXED fields of a stored job as a table (nil when there is no such job), from an HMGET
-- reply whose INDEXED values start at position ``from``.
local function indexed_of(reply, from)
  if not reply[from] then
    return nil
  end
  local t = {}
  for k, name in ipairs(INDEXED) do
    t[name] = reply[from + k - 1] or nil
  end
  return t
end

local function read_indexed(id)
  return indexed_of(redis.call('HMGET', job_key(id), unpack(INDEXED)), 1)
end

-- The idempotency hash's field: the tenant's length keeps (tenant, key) pairs apart.
local function idem_field(tenant, key)
  return string.len(tenant) .. ':' .. tenant .. ':' .. key
end

-- Sorted-set writes and counter changes are gathered while a script runs and written by
-- flush() at its end, one command per key: a batch mostly touches the same few keys. Removals
-- are written before additions, so a script flushes before it changes a job a second time.
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

-- Counters per status and model, every status (depth() picks the ones it is asked for).
local function count(status, model, delta)
  local field = status .. ':' .. model
  deltas[field] = (deltas[field] or 0) + delta
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

-- The outbox (roles.Outbox): with a separate store, every job written is marked with the time of
-- the write, in the same script; the key exists once the queue has an epoch (its generation).
local marking = nil

local function mark(id, now)
  if marking == nil then
    marking = redis.call('EXISTS', P .. ':epoch') == 1
  end
  if marking then
    zadd(P .. ':outbox', now, id)
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
-- scheduled job) wait in a ZSET per model scored by available_at, which lease drains. Which of
-- the two a job goes to is only where lease looks first: lease moves a job it finds in the
-- wrong one, so the clock that decides it (the caller's) need not be exact.
local function ready_key(model, prio)
  return P .. ':ready:' .. model .. ':' .. prio
end

local function ready_member(id, available_at)
  return sortable(available_at) .. id
end

local function make_ready(id, job, due)
  if due then
    zadd(ready_key(job.model, job.priority), job.rank, ready_member(id, job.available_at))
    zadd(P .. ':prios:' .. job.model, job.priority, job.priority)
  else
    zadd(P .. ':delayed:' .. job.model, job.available_at, id)
  end
  if job.expires_at then
    zadd(P .. ':expiring', job.expires_at, id)
  end
end

local function drop_empty_prio(model, prio)
  if redis.call('EXISTS', ready_key(model, prio)) == 0 then
    redis.call('ZREM', P .. ':prios:' .. model, prio)
  end
end

-- Written at once (not gathered): lease reads the ready sets as it goes.
local function unready(id, job)
  if redis.call('ZREM', ready_key(job.model, job.priority),
      ready_member(id, job.available_at)) == 1 then
    drop_empty_prio(job.model, job.priority)
  end
  redis.call('ZREM', P .. ':delayed:' .. job.model, id)
  redis.call('ZREM', P .. ':expiring', id)
end

local LINE = {'model', 'priority', 'rank', 'available_at', 'expires_at'}

local function same_line(a, b)
  for _, name in ipairs(LINE) do
    if a[name] ~= b[name] then
      return false
    end
  end
  return true
end

-- A job's fields went from ``old`` to ``new`` (INDEXED tables; old is nil for a new job, new
-- is nil for a deleted one): move it between the indexes. ``ids`` and ``ids:<name>:<value>``
-- list jobs; the counters give depth; the waiting lines are leased from; ``leased`` (by
-- lease_expires_at) gives stale_leases; ``expiring`` (waiting jobs by expires_at) gives overdue;
-- ``finished:<status>`` (by finished_at) gives purge. Returns whether new is waiting and due
-- at ``now``, so the caller wakes the model's idle workers.
local LISTED = {'status', 'model', 'tenant'}

local function reindex(id, old, new, now)
  if not old then
    zadd(P .. ':ids', 0, id)
  elseif not new then
    zrem(P .. ':ids', id)
  end
  for _, name in ipairs(LISTED) do
    local a, b = old and old[name], new and new[name]
    if a ~= b then
      if a then zrem(P .. ':ids:' .. name .. ':' .. a, id) end
      if b then zadd(P .. ':ids:' .. name .. ':' .. b, 0, id) end
    end
  end
  if not (old and new and old.status == new.status and old.model == new.model) then
    if old then count(old.status, old.model, -1) end
    if new then count(new.status, new.model, 1) end
  end
  local was, is = old and WAITING[old.status], new and WAITING[new.status]
  local due = is and tonumber(new.available_at) <= now
  if not (was and is and same_line(old, new)) then
    if was then unready(id, old) end
    if is then make_ready(id, new, due) end
  end
  local a, b = old and old.lease_expires_at, new and new.lease_expires_at
  if b and b ~= a then
    zadd(P .. ':leased', b, id)
  elseif a and not b then
    zrem(P .. ':leased', id)
  end
  a = old and old.finished_at and old.status
  b = new and new.finished_at and new.status
  if a and a ~= b then
    zrem(P .. ':finished:' .. a, id)
  end
  if b and (a ~= b or old.finished_at ~= new.finished_at) then
    zadd(P .. ':finished:' .. b, new.finished_at, id)
  end
  if new then
    mark(id, now)
  end
  return due
end
