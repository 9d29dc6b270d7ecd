-- lua-resty-websocket's client (Debian's lua-nginx-websocket), unmodified,
-- against the echo server of tests/e2e/test_e2e_websocket.py: text, binary,
-- ping/pong, a 64-bit-length frame, a fragmented reply, the close
-- handshake.  ?port= the server's port.
local ok, client = pcall(require, "resty.websocket.client")
if not ok then
    client = require "nginx.websocket.client"
end

local wb, err = client:new({ timeout = 2000, max_payload_len = 200000 })
if not wb then
    ngx.say("failed to create: ", err)
    return
end
local uri = "ws://127.0.0.1:" .. ngx.var.arg_port .. "/echo"
local ok, err = wb:connect(uri, { protocols = "echo", origin = "http://test" })
if not ok then
    ngx.say("failed to connect: ", err)
    return
end

local function show(data, typ, err)
    if data and #data > 40 then
        data = #data .. " bytes"
    end
    ngx.say(tostring(data), " ", tostring(typ), " ", tostring(err))
end

ngx.say("send text: ", wb:send_text("hello"))
show(wb:recv_frame())
ngx.say("send binary: ", wb:send_binary("\0\1\2\255"))
local data, typ = wb:recv_frame()
ngx.say("binary: ", #data, " ", typ, " ", data == "\0\1\2\255")
ngx.say("send ping: ", wb:send_ping("are you there"))
show(wb:recv_frame())
ngx.say("send big: ", wb:send_text(string.rep("x", 70000)))
show(wb:recv_frame())
ngx.say("send medium: ", wb:send_text(string.rep("y", 300)))
show(wb:recv_frame())
ngx.say("ask fragments: ", wb:send_text("fragment me"))
show(wb:recv_frame())
show(wb:recv_frame())
wb:set_timeout(100)
show(wb:recv_frame())
wb:set_timeout(2000)
ngx.say("send close: ", wb:send_close(1000, "bye"))
show(wb:recv_frame())
ngx.say("close: ", wb:close())
