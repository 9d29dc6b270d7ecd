-- on_abort: when the client goes away, the handler records it in redis
local ok, redis = pcall(require, "resty.redis")
if not ok then
    redis = require "nginx.redis" -- Debian's OpenResty (the oracle) knows only this name
end
local port, key = tonumber(ngx.var.arg_port), ngx.var.arg_key
local ok, err = ngx.on_abort(function()
    local red = redis:new()
    assert(red:connect("127.0.0.1", port))
    red:set(key, "aborted")
    red:close()
    ngx.exit(499)
end)
ngx.say("registered ", ok, " ", tostring(err))
ngx.flush(true)
ngx.sleep(5)
ngx.say("not aborted")
