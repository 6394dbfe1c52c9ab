-- members: KEYS members, nodes, epoch. Removes expired members (one epoch bump
-- for all of them), then returns { epoch, id1, info1, id2, info2, ... } of the
-- live ones, all read at the same instant.
local now = dec(now_ms())
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, id in ipairs(expired) do
    redis.call('HDEL', KEYS[2], id)
  end
  bump(KEYS[3], tonumber(now))
end
local reply = { redis.call('GET', KEYS[3]) or '0' }
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  reply[#reply + 1] = id
  -- Never nil: a nil would end the Lua array and silently drop later members. An
  -- empty string fails to decode and is reported as corrupt.
  reply[#reply + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return reply
