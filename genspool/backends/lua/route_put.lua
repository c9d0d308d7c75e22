-- route_put: ARGV[3..] = name, doc. Stores the route and moves the revision of the set on in
-- one step (a reader never sees one without the other); returns the new revision.
redis.call('HSET', P .. ':routes', ARGV[3], ARGV[4])
return redis.call('INCR', P .. ':routes:revision')
