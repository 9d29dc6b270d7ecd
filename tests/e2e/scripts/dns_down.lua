-- lua-resty-dns when nothing listens on the server's port: the UDP query
-- gets "connection refused" (ICMP), the TCP one too.  ?port= a closed port.
local ok, resolver = pcall(require, "resty.dns.resolver")
if not ok then
    resolver = require "nginx.dns.resolver"
end

local r = resolver:new({
    nameservers = { { "127.0.0.1", tonumber(ngx.var.arg_port) } },
    retrans = 1,
    timeout = 500,
})
ngx.say("udp: ", r:query("example.test"))
ngx.say("tcp: ", r:tcp_query("example.test"))
