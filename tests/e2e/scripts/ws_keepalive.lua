-- A websocket connection back in the pool: the next request's connect()
-- gets it (no new handshake) and it still echoes.  ?port=, ?pool=.
local ok, client = pcall(require, "resty.websocket.client")
if not ok then
    client = require "nginx.websocket.client"
end

local wb = client:new({ timeout = 2000 })
local uri = "ws://127.0.0.1:" .. ngx.var.arg_port .. "/echo"
local ok, err = wb:connect(uri, { pool = ngx.var.arg_pool })
if not ok then
    ngx.say("failed to connect: ", err)
    return
end
ngx.say("reused: ", wb.sock:getreusedtimes())
ngx.say("send: ", wb:send_text("ping " .. ngx.var.arg_pool))
local data, typ = wb:recv_frame()
ngx.say("echo: ", data, " ", typ)
ngx.say("keepalive: ", wb:set_keepalive(10000, 10))
