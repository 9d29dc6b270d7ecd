-- lua-resty-redis INCR with keepalive (bench/openresty.py); ?port=N.
local redis = require "resty.redis"
local red = redis:new()
red:set_timeout(1000)
local ok, err = red:connect("127.0.0.1", tonumber(ngx.var.arg_port))
if not ok then
    ngx.status = 500
    ngx.say("failed to connect: ", err)
    return
end
local n, err = red:incr("bench")
if not n then
    ngx.status = 500
    ngx.say("failed to incr: ", err)
    return
end
red:set_keepalive(10000, 100)
ngx.say(n)
