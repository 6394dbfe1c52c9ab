-- cas_claim: KEYS claims (hash partition → "<epoch> <node>"); ARGV partition,
-- expected value ('' = unclaimed), new value, new epoch. Returns 1 if set, 0 if
-- the current value differs from the expected one or the new epoch is not
-- greater, -1 if the current value is unreadable.

-- a > b for canonical decimals (no leading zeros), exact for any length; byte by
-- byte, because Lua compares strings with the locale's strcoll.
local function greater(a, b)
  if #a ~= #b then
    return #a > #b
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return false
end

local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  if ARGV[2] ~= '' then
    return 0
  end
else
  if cur ~= ARGV[2] then
    return 0
  end
  local epoch = string.match(cur, '^(%d+) ')
  if not epoch then
    return -1
  end
  if not greater(ARGV[4], epoch) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
