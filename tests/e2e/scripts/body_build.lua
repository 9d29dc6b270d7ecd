-- ngx.req.set_body_data / init_body / append_body / finish_body: what the
-- script sees afterwards (compared with OpenResty)
local function show(what)
    local data = ngx.req.get_body_data()
    local file = ngx.req.get_body_file()
    local content = "-"
    if file then
        local f = assert(io.open(file, "rb"))
        content = f:read("*a")
        f:close()
    end
    local args, err = ngx.req.get_post_args()
    local keys = {}
    for k, v in pairs(args or {}) do keys[#keys + 1] = k .. "=" .. tostring(v) end
    table.sort(keys)
    ngx.say(what, ": data=", tostring(data), " file=", content,
            " length=", tostring(ngx.var.http_content_length),
            " request_body=", tostring(ngx.var.request_body),
            " args=", table.concat(keys, ","), " ", tostring(err))
end
local function try(f, ...)
    local ok, err = pcall(f, ...)
    ngx.say(ok and "ok" or (tostring(err):gsub("^.-:%d+: ", "")))
end
try(ngx.req.init_body, 4)
ngx.req.read_body()
-- (no append_body before init_body: OpenResty's answer depends on whether
-- nginx allocated its read buffer, i.e. on how the body's packets came)
ngx.req.set_body_data("a=1&b=2")
show("set_body_data")
ngx.req.init_body(4)
ngx.req.append_body("c=")
ngx.req.append_body("34")
ngx.req.finish_body()
show("in memory")
ngx.req.init_body(4)
ngx.req.append_body("d=5")
ngx.req.append_body("67&e")
ngx.req.finish_body()
show("in a file")
ngx.req.init_body(0)
ngx.req.finish_body()
show("empty")
try(ngx.req.init_body, -1)
