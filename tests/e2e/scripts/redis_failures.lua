-- Failures a script must get back as nil plus the error, the worker
-- carrying on: ?case=refused|timeout|midway, ?port= the peer.
local ok, redis = pcall(require, "resty.redis")
if not ok then
    redis = require "nginx.redis"
end

local port = tonumber(ngx.var.arg_port)
local case = ngx.var.arg_case
local red = redis:new()
red:set_timeout(100)
local ok, err = red:connect("127.0.0.1", port)
if not ok then
    ngx.say("connect: ", err)
    return
end
local res, err = red:get("key")
ngx.say("get: ", tostring(res), " ", err)

-- the same with a bare cosocket, to see the partial data
local sock = ngx.socket.tcp()
sock:settimeout(100)
assert(sock:connect("127.0.0.1", port))
ngx.say("send: ", sock:send({ "*2\r\n", "$3\r\nGET\r\n", { "$3\r\n", "key", "\r\n" } }))
local line, err, partial = sock:receive()
ngx.say("line: ", tostring(line), " ", tostring(err), " [", tostring(partial), "]")
if line then
    local data, err, partial = sock:receive(10)
    ngx.say("data: ", tostring(data), " ", tostring(err), " [", tostring(partial), "]")
end
if case == "timeout" then
    -- a read timeout leaves the socket open
    ngx.say("close: ", sock:close())
else
    ngx.say("receive again: ", select(2, sock:receive()))
    ngx.say("close: ", sock:close())
end
ngx.say("close again: ", select(2, sock:close()))
