-- acquire_slot: ARGV[3..] = name, holder, limit, now, until. 1 when holder now holds a slot.
local key, holder = P .. ':slot:' .. ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[6]) -- slots whose time ran out are free
if redis.call('ZSCORE', key, holder) then
  redis.call('ZADD', key, ARGV[7], holder)
  return 1
end
if redis.call('ZCARD', key) >= tonumber(ARGV[5]) then
  return 0
end
redis.call('ZADD', key, ARGV[7], holder)
return 1
