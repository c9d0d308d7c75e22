-- acquire_slot: ARGV = P, name, holder, limit, now, until. 1 when holder now holds a slot.
local key, holder = P .. ':slot:' .. ARGV[2], ARGV[3]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[5]) -- slots whose time ran out are free
if redis.call('ZSCORE', key, holder) then
  redis.call('ZADD', key, ARGV[6], holder)
  return 1
end
if redis.call('ZCARD', key) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', key, ARGV[6], holder)
return 1
