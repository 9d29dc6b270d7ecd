-- lua-resty-redis, unmodified (Debian's lua-nginx-redis): get/set, incr,
-- an error reply, a pipeline.  ?port= the redis-server, ?key= a key prefix.
local ok, redis = pcall(require, "resty.redis")
if not ok then
    redis = require "nginx.redis" -- Debian's OpenResty (the oracle) knows only this name
end

local port = tonumber(ngx.var.arg_port)
local key = ngx.var.arg_key or "basic"
local red = redis:new()
red:set_timeout(1000)
local ok, err = red:connect("127.0.0.1", port)
if not ok then
    ngx.say("failed to connect: ", err)
    return
end
red:del(key, key .. ":n", key .. ":p", key .. ":list", key .. ":h")

ngx.say("set: ", red:set(key, "an animal"))
ngx.say("get: ", red:get(key))
ngx.say("missing is null: ", red:get(key .. ":missing") == ngx.null)
ngx.say("incr: ", red:incr(key .. ":n"))
ngx.say("incr: ", red:incr(key .. ":n"))
local res, err = red:incr(key)
ngx.say("incr a string: ", tostring(res), ", ", err)
ngx.say("hmset: ", red:hmset(key .. ":h", { a = "1" }), " hget: ", red:hget(key .. ":h", "a"))

red:init_pipeline()
red:set(key .. ":p", "Marry")
red:get(key .. ":p")
red:lpush(key .. ":list", "a", "b")
red:lrange(key .. ":list", 0, -1)
red:incr(key)
local results, err = red:commit_pipeline()
if not results then
    ngx.say("failed to commit the pipeline: ", err)
    return
end
for i, r in ipairs(results) do
    if type(r) == "table" then
        if r[1] == false then
            ngx.say("pipeline ", i, ": error: ", r[2])
        else
            ngx.say("pipeline ", i, ": ", table.concat(r, ","))
        end
    else
        ngx.say("pipeline ", i, ": ", r)
    end
end
red:del(key, key .. ":n", key .. ":p", key .. ":list", key .. ":h")
ngx.say("close: ", red:close())
ngx.say("close again: ", red:close())
