-- Number semantics a script sees: the default runtime (PUC Lua 5.2, doubles
-- only) prints what OpenResty's LuaJIT prints; Lua 5.3+ would print "5.0",
-- "2147483648.0" and refuse %d of 3.5 (docs/runtimes.md).
ngx.say("n=" .. 10 / 2, " ", 10 / 2, " ", 2^31, " ", math.max(1, 2.0), " ", math.floor(-3.5) .. "")
ngx.say(string.format("%d %5.1f %x", 3.5, 2, 255), " ", tostring(1e15), " ", 2^53)
ngx.say(bit.band(0xff00ff, 0xffff), " ", bit.tohex(bit.bnot(0)), " ", bit.rshift(-1, 28))
ngx.say(unpack({ 1, 2, 3 }), " ", loadstring("return 6 * 7")(), " ", math.pow(2, 0.5))
