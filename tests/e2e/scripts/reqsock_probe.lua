-- ngx.req.socket's return conventions, mode by mode (test_e2e_reqsocket.py)
local mode = ngx.var.arg_mode or "reads"
local function show(...)
    local t = {}
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        t[i] = type(v) == "string" and ("%q"):format(v) or type(v) == "table" and "table"
               or tostring(v)
    end
    ngx.say(table.concat(t, ", "))
end
if mode == "read_first" then
    ngx.req.read_body()
    show(ngx.req.socket())
    show(ngx.req.get_body_data())
    return
elseif mode == "discard_first" then
    ngx.req.discard_body()
    show(ngx.req.socket())
    return
elseif mode == "twice" then
    local sock = ngx.req.socket()
    show(sock)
    show(ngx.req.socket())
    ngx.req.read_body()
    show(ngx.req.get_body_data(), ngx.req.get_body_file())
    show(next(ngx.req.get_post_args()))
    show(sock:receive("*a"))
    show(sock:receive("*a"))
    show(sock:receive(1))
    show(sock:receive())
    return
elseif mode == "args" then
    show(pcall(ngx.req.socket, false, 1))
    show(pcall(ngx.req.socket, false))
    return
end
local sock, err = ngx.req.socket()
show(sock, err)
if not sock then
    return
end
show(sock.send, sock.close, sock.connect, sock.setkeepalive, sock.settimeouts ~= nil)
sock:settimeout(5000)
show(sock:receive(0))
show(sock:receive(3))
show(sock:receive())
show(sock:receive("*l"))
local it = sock:receiveuntil("--b", { inclusive = true })
for _ = 1, 5 do
    show(it(2))
end
show(it())
show(sock:receive(100))
show(sock:receive(1))
show(sock:receive("*a"))
show(it())
