-- Pub/sub with two connections in one request: one subscribes and reads
-- with read_reply, the other publishes.
local ok, redis = pcall(require, "resty.redis")
if not ok then
    redis = require "nginx.redis"
end

local port = tonumber(ngx.var.arg_port)
local channel = ngx.var.arg_channel or "news"

local sub = redis:new()
sub:set_timeout(1000)
local ok, err = sub:connect("127.0.0.1", port)
if not ok then
    ngx.say("failed to connect: ", err)
    return
end
local res, err = sub:subscribe(channel)
ngx.say("subscribe: ", table.concat(res, " "))

local pub = redis:new()
pub:set_timeout(1000)
assert(pub:connect("127.0.0.1", port))
ngx.say("publish: ", pub:publish(channel, "hello"))
ngx.say("publish: ", pub:publish(channel, "world"))

for _ = 1, 2 do
    local reply, err = sub:read_reply()
    if not reply then
        ngx.say("failed to read a reply: ", err)
        return
    end
    ngx.say("reply: ", table.concat(reply, " "))
end

sub:set_timeout(100)
local reply, err = sub:read_reply()
ngx.say("nothing more: ", tostring(reply), " ", err)
ngx.say("keepalive while subscribed: ", select(2, sub:set_keepalive()))
res = sub:unsubscribe(channel)
ngx.say("unsubscribe: ", table.concat(res, " "))
ngx.say("keepalive: ", sub:set_keepalive(10000, 8))
ngx.say("keepalive: ", pub:set_keepalive(10000, 8))
