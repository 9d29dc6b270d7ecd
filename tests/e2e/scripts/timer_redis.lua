-- a timer that outlives its request: SETs ?key in the redis on ?port
local ok, redis = pcall(require, "resty.redis")
if not ok then
    redis = require "nginx.redis" -- Debian's OpenResty (the oracle) knows only this name
end
local port, key = tonumber(ngx.var.arg_port), ngx.var.arg_key
local ok, err = ngx.timer.at(0.05, function(premature, k, started)
    local ok_say = pcall(ngx.say, "x")
    local red = redis:new()
    red:set_timeout(2000)
    assert(red:connect("127.0.0.1", port))
    local t = ngx.thread.spawn(function() ngx.sleep(0.01) return "thread" end)
    local _, from_thread = ngx.thread.wait(t)
    red:set(k, table.concat({ tostring(premature), ngx.get_phase(), tostring(ok_say),
                              from_thread, tostring(ngx.now() >= started + 0.05) }, " "))
    red:close()
end, key, ngx.now())
ngx.say("scheduled ", ok, " ", tostring(err))
