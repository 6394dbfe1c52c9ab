-- heartbeat: KEYS members (zset id → expiry ms), nodes (hash id → NodeInfo),
-- epoch; ARGV id, ttl in ms, encoded NodeInfo. Renews the lease; bumps the epoch
-- when the node was not live (absent or expired) or its NodeInfo changed.
-- Returns 1 when the node was not live before (it joined), else 0.
local now = now_ms()
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
local joined = (not old) or tonumber(old) <= now
local changed = joined
redis.call('ZADD', KEYS[1], dec(now + tonumber(ARGV[2])), ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  changed = true
end
if changed then
  bump(KEYS[3], now)
end
if joined then
  return 1
end
return 0
