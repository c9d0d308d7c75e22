-- copied: ARGV[3..] = (job id, mark) pairs whose record a separate store now has. Clears each
-- mark still as read: a job written again since then keeps its newer mark.
local outbox = P .. ':outbox'
for i = 3, #ARGV, 2 do
  local at = redis.call('ZSCORE', outbox, ARGV[i])
  if at and tonumber(at) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', outbox, ARGV[i])
  end
end
return 0
