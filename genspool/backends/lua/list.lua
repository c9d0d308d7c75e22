-- list: ARGV[3..] = before ('' = from the newest), limit, budget, status, model, tenant
-- ('' = any). Walks the smallest index among the filters newest first (ids are time-ordered,
-- so a reverse lexicographic range is a reverse chronological one) and checks the other
-- filters on each job. Looks at no more than budget ids per call, so a rare combination of
-- filters cannot stall the server. Returns {cursor, jobs}: a non-empty cursor means the
-- budget ran out before limit jobs were found; call again with it as before.
local before, limit, budget = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local want = {ARGV[6], ARGV[7], ARGV[8]}
local names, columns = {'status', 'model', 'tenant'}, {6, 4, 2} -- positions in FIELDS
local index, smallest = P .. ':ids', nil
for k, name in ipairs(names) do
  if want[k] ~= '' then
    local key = P .. ':ids:' .. name .. ':' .. want[k]
    local n = redis.call('ZCARD', key)
    if smallest == nil or n < smallest then
      index, smallest = key, n
    end
  end
end
local out, max = {}, (before == '' and '+' or '(' .. before)
while #out < limit do
  if budget <= 0 then
    return {string.sub(max, 2), out}
  end
  local ids = redis.call('ZREVRANGEBYLEX', index, max, '-', 'LIMIT', 0,
    math.min(budget, limit - #out))
  if #ids == 0 then
    break
  end
  for _, id in ipairs(ids) do
    local job = read(id)
    local ok = job[1] ~= false
    for k = 1, 3 do
      if ok and want[k] ~= '' and job[columns[k]] ~= want[k] then
        ok = false
      end
    end
    if ok then
      out[#out + 1] = job
    end
  end
  budget = budget - #ids
  max = '(' .. ids[#ids]
end
return {'', out}
