-- A cosocket is bound to the request that connected it: ?action=hold
-- connects and keeps it for a while, ?action=use (meanwhile, another
-- request) tries to use it.
local stash = package.loaded["socket_other_request.stash"] or {}
package.loaded["socket_other_request.stash"] = stash

if ngx.var.arg_action == "hold" then
    local sock = ngx.socket.tcp()
    assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
    stash.sock = sock
    ngx.sleep(0.5)
    stash.sock = nil
    ngx.say("held: ", sock:close())
else
    local sock = stash.sock
    if not sock then
        ngx.say("nothing held")
        return
    end
    local ok, err = pcall(sock.send, sock, "PING\r\n")
    ngx.say("use: ", tostring(ok), " ", err)
end
