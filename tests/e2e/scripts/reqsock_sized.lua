-- The body read with receive(n) to its end (test_e2e_reqsocket.py).
local n = tonumber(ngx.var.arg_n) or 65536
local hash = ngx.var.arg_hash ~= "0" -- off: nothing is kept (a 100 MB body)
local sock, err = ngx.req.socket()
if not sock then
    ngx.say("no socket: ", err)
    return
end
local count, size, md5 = 0, 0, {}
while true do
    local data, err, partial = sock:receive(n)
    if not data then
        size = size + #partial
        if hash then
            md5[#md5 + 1] = partial
        end
        ngx.say("end: ", err, " partial ", #partial)
        break
    end
    count = count + 1
    size = size + #data
    if hash then
        md5[#md5 + 1] = data
    end
    if #md5 > 64 then
        md5 = { table.concat(md5) }
    end
end
ngx.say("reads ", count, " size ", size, " md5 ", ngx.md5(table.concat(md5)))
