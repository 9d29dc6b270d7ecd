-- Connects, names the connection, and ends without closing it (or, with
-- ?sleep=, sleeps first: for a client that goes away).
local sock = ngx.socket.tcp()
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
local name = ngx.var.arg_name
local cmd = "CLIENT SETNAME " .. name .. "\r\n"
assert(sock:send(cmd))
ngx.say("setname: ", sock:receive())
local sleep = tonumber(ngx.var.arg_sleep)
if sleep then
    ngx.flush(true)
    ngx.sleep(sleep)
end
