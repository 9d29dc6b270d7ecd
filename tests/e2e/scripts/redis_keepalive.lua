-- Keepalive reuse across requests: the first request's connection comes
-- back from the pool in the next one.  ?pool= a pool name.
local ok, redis = pcall(require, "resty.redis")
if not ok then
    redis = require "nginx.redis"
end

local port = tonumber(ngx.var.arg_port)
local red = redis:new()
red:set_timeout(1000)
local ok, err = red:connect("127.0.0.1", port, { pool = ngx.var.arg_pool })
if not ok then
    ngx.say("failed to connect: ", err)
    return
end
ngx.say("reused: ", red:get_reused_times())
ngx.say("ping: ", red:ping())
ngx.say("keepalive: ", red:set_keepalive(10000, 10))
ngx.say("after keepalive: ", select(2, red:get_reused_times()))
