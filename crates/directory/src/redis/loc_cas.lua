-- loc_cas: KEYS a user's loc hash (resource → Location); ARGV resource, identity
-- prefix, new value ('' = delete). Writes only if the stored value starts with
-- the identity prefix (format version and connection id, plus the edge for an
-- update): a stale connection can neither update nor delete its successor's
-- entry. Returns 1 if written, else 0.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or string.sub(cur, 1, #ARGV[2]) ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
