-- lua-resty-dns (Debian's lua-nginx-dns), unmodified, against the dnsmasq
-- of tests/e2e/test_e2e_dns.py (loopback, local records only): A, AAAA,
-- CNAME, TXT, MX, SRV, NXDOMAIN, over UDP and over TCP.  ?port= its port.
local ok, resolver = pcall(require, "resty.dns.resolver")
if not ok then
    resolver = require "nginx.dns.resolver"
end

local r, err = resolver:new({
    nameservers = { { "127.0.0.1", tonumber(ngx.var.arg_port) } },
    retrans = 2,
    timeout = 1000,
})
if not r then
    ngx.say("failed to instantiate the resolver: ", err)
    return
end

local function show(answers, err)
    if not answers then
        return "failed: " .. tostring(err)
    end
    if answers.errcode then
        return "server error: " .. answers.errcode .. " " .. tostring(answers.errstr)
    end
    local out = {}
    for i, ans in ipairs(answers) do
        local fields = {}
        for k, v in pairs(ans) do
            if k == "class" or k == "section" then
                v = nil -- always 1 (IN, answer) here
            elseif type(v) == "table" then
                v = "{" .. table.concat(v, ",") .. "}"
            end
            if v ~= nil then
                fields[#fields + 1] = k .. "=" .. tostring(v)
            end
        end
        table.sort(fields)
        out[i] = table.concat(fields, " ")
    end
    return #out .. " answers\n  " .. table.concat(out, "\n  ")
end

local queries = {
    { "example.test", r.TYPE_A },
    { "sub.example.test", r.TYPE_A },
    { "v6.test", r.TYPE_AAAA },
    { "alias.test", r.TYPE_A },
    { "txt.test", r.TYPE_TXT },
    { "example.test", r.TYPE_MX },
    { "_sip._tcp.example.test", r.TYPE_SRV },
    { "nope.test", r.TYPE_A },
}
for _, q in ipairs(queries) do
    ngx.say("udp ", q[1], " ", q[2], ": ", show(r:query(q[1], { qtype = q[2] })))
end
for _, q in ipairs(queries) do
    ngx.say("tcp ", q[1], " ", q[2], ": ", show(r:tcp_query(q[1], { qtype = q[2] })))
end
ngx.say("reverse: ", resolver.arpa_str("10.1.2.3"))
ngx.say("reverse v6: ", resolver.arpa_str("fd00::1234"))
ngx.say("compress v6: ", resolver.compress_ipv6_addr("fd00:0:0:0:0:0:0:1234"))

