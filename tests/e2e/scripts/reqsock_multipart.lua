-- A multipart/form-data reader on ngx.req.socket, the way lua-resty-upload
-- reads one: receiveuntil on the boundary with a chunk size, receive("*l")
-- for the part headers.  Prints each part's headers, size, md5 and the
-- sizes of the chunks it came in (test_e2e_reqsocket.py).
local chunk = tonumber(ngx.var.arg_chunk) or 4096
local ctype = ngx.var.content_type or ""
local boundary = ctype:match("boundary=\"?([^\";]+)")
if not boundary then
    ngx.say("no boundary")
    return
end
local sock, err = ngx.req.socket()
if not sock then
    ngx.say("no socket: ", err)
    return
end
sock:settimeout(10000)
local preamble = sock:receiveuntil("--" .. boundary)
local data, err = preamble()
if not data then
    ngx.say("no first boundary: ", err)
    return
end
local until_boundary = sock:receiveuntil("\r\n--" .. boundary)
while true do
    local line, err = sock:receive("*l")
    if not line then
        ngx.say("boundary line: ", err)
        return
    end
    if line == "--" then
        break
    end
    while true do
        local header, err = sock:receive("*l")
        if not header then
            ngx.say("header: ", err)
            return
        end
        if header == "" then
            break
        end
        ngx.say("header: ", header)
    end
    local pieces, sizes, last, runs = {}, {}, nil, 0
    while true do
        local piece, err = until_boundary(chunk)
        if not piece then
            if err then
                ngx.say("body: ", err)
                return
            end
            break
        end
        pieces[#pieces + 1] = piece
        if #piece ~= last then
            if last then
                sizes[#sizes + 1] = last .. "x" .. runs
            end
            last, runs = #piece, 0
        end
        runs = runs + 1
    end
    if last then
        sizes[#sizes + 1] = last .. "x" .. runs
    end
    local body = table.concat(pieces)
    ngx.say("part: ", #body, " ", ngx.md5(body), " chunks ", table.concat(sizes, " "))
end
ngx.say("rest: ", sock:receive("*a"))
ngx.say("after: ", select(2, sock:receive(1)))
