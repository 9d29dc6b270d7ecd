-- Two light threads on one cosocket (?port=redis): OpenResty's cosockets
-- are full duplex, one reader and one writer at a time.
local sock = ngx.socket.tcp()
sock:settimeout(2000)
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
local reader = ngx.thread.spawn(function()
    return sock:receive()              -- waits: nothing was sent yet
end)
ngx.say("second reader: ", select(2, sock:receive()))
ngx.say("until: ", select(2, sock:receiveuntil("\r\n")()))
ngx.say("send while reading: ", sock:send("PING\r\n"))
ngx.say("first reader: ", select(2, ngx.thread.wait(reader)))
local doomed = ngx.thread.spawn(function() return sock:receive() end)
ngx.say("kill: ", ngx.thread.kill(doomed))
ngx.say("send: ", sock:send("PING\r\n"))
ngx.say("after the kill: ", sock:receive())
sock:close()
