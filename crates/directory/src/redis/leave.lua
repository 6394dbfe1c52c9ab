-- leave: KEYS members, nodes, epoch; ARGV id. Bumps the epoch if the node was
-- recorded at all: even if its lease had expired, nobody has yet seen it removed.
local now = now_ms()
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  bump(KEYS[3], now)
end
return 1
