-- Prepended to the membership scripts (see redis.rs).

-- Directory time: the Redis server's clock in milliseconds, never a client's, so
-- nodes with skewed clocks agree on whose lease has expired.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as exact decimal strings (Lua's tostring keeps 14 digits only).
local function dec(n)
  return string.format('%.0f', n)
end

-- Bumps the membership epoch. A missing epoch starts at the current time in ms
-- instead of 1: if Redis loses its data, the new epochs still exceed every epoch
-- handed out before (unless changes came faster than one per millisecond), so no
-- reader mistakes a new member set for one it has already seen.
local function bump(key, now)
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCR', key)
  else
    redis.call('SET', key, dec(now))
  end
end
