-- ngx.req.set_header / clear_header as get_headers() and ngx.var see them
-- (test_e2e_reqsocket.py); the request carries X-Old, X-Multi (twice), Cookie.
local function show(label)
    local h = ngx.req.get_headers()
    local names = {}
    for k in pairs(h) do
        if k:match("^x[-_]") or k == "cookie" or k == "content-type" then
            names[#names + 1] = k
        end
    end
    table.sort(names)
    local parts = {}
    for _, k in ipairs(names) do
        local v = h[k]
        parts[#parts + 1] = k .. "=" .. (type(v) == "table" and table.concat(v, ",") or v)
    end
    ngx.say(label, ": ", table.concat(parts, " "))
    ngx.say("  vars: ", tostring(ngx.var.http_x_old), " ", tostring(ngx.var.http_x_new), " ",
            tostring(ngx.var.http_x_multi), " ", tostring(ngx.var.cookie_a), " ",
            tostring(ngx.var.http_x_under), " ",
            tostring(h.x_new), " ", tostring(h["X-New"]))
end
show("start")
ngx.req.set_header("X-New", "fresh")
ngx.req.set_header("X-Old", "replaced")
show("set")
ngx.req.set_header("X-Multi", { "a", "b", 3 })
ngx.req.set_header("Cookie", "a=1; b=2")
ngx.req.set_header("X_Under", "u")
ngx.req.set_header("Content-Type", "text/x-new")
show("table")
ngx.req.clear_header("X-Old")
ngx.req.set_header("X-New", "")
ngx.req.clear_header("x-multi")
ngx.req.set_header("X-Num", 42)
show("cleared")
