-- route_delete: ARGV[3] = name. Removes the route and moves the revision of the set on, in one
-- step; returns the new revision, or 0 when there was no such route (the revision stays).
if redis.call('HDEL', P .. ':routes', ARGV[3]) == 0 then
  return 0
end
return redis.call('INCR', P .. ':routes:revision')
