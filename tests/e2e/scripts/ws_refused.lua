-- lua-resty-websocket's errors: a closed port, a bad uri, a peer that is
-- not a websocket server.  ?port= a closed port, ?http= the echo server,
-- which answers 400 to any path but /echo.
local ok, client = pcall(require, "resty.websocket.client")
if not ok then
    client = require "nginx.websocket.client"
end

local wb = client:new({ timeout = 1000 })
ngx.say("refused: ", wb:connect("ws://127.0.0.1:" .. ngx.var.arg_port .. "/"))
wb = client:new({ timeout = 1000 })
ngx.say("bad uri: ", wb:connect("http://127.0.0.1/"))
wb = client:new({ timeout = 1000 })
local ok, err = wb:connect("ws://127.0.0.1:" .. ngx.var.arg_http .. "/not-here")
ngx.say("not websocket: ", ok, " ", err)
