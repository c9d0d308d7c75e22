-- reserve: ARGV[3..] = key, now, cost, rate_per_s, burst. gcra() of core/gcra.py, line for
-- line, on doubles; returns the wait in seconds as a string (%.17g keeps every bit of a double).
local key = P .. ':limit:' .. ARGV[3]
local now, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local rate, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local stored = redis.call('GET', key)
local tat = stored and tonumber(stored)
if not tat or tat == 0 then -- Python's `tat or now`
  tat = now
end
local interval = 1.0 / rate
local base = math.max(tat, now)
local new_tat = base + math.min(cost, burst) * interval
local allow_at = new_tat - burst * interval
if allow_at - now > 1e-9 then -- not a rounding error of the float sums above
  return string.format('%.17g', allow_at - now)
end
redis.call('SET', key, string.format('%.17g', base + cost * interval))
return '0'
