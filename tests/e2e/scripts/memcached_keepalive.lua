-- lua-resty-memcached's connection back in the pool, reused by the next
-- request.  ?port= memcached's port, ?pool= a pool name.
local ok, memcached = pcall(require, "resty.memcached")
if not ok then
    memcached = require "nginx.memcached"
end

local memc = memcached:new()
memc:set_timeout(1000)
local ok, err = memc:connect("127.0.0.1", tonumber(ngx.var.arg_port),
                             { pool = ngx.var.arg_pool })
if not ok then
    ngx.say("failed to connect: ", err)
    return
end
ngx.say("reused: ", memc:get_reused_times())
ngx.say("set: ", memc:set("ka-" .. ngx.var.arg_pool, "v"))
ngx.say("keepalive: ", memc:set_keepalive(10000, 10))
ngx.say("after keepalive: ", select(2, memc:get_reused_times()))
