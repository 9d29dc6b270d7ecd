-- Request headers in; response headers and cookies out.
local headers = ngx.req.get_headers()

ngx.header["Content-Type"] = "text/plain; charset=utf-8"
ngx.header["X-Powered-By"] = "fcgi-lua"
ngx.header.cache_control = "no-store"          -- underscores become dashes
ngx.header["Set-Cookie"] = {                    -- a table: one header per value
    "visited=yes; Path=/; HttpOnly",
    "theme=dark; Path=/; Max-Age=3600",
}

ngx.say("User-Agent: ", headers["user-agent"] or "(none)")
ngx.say("Cookie:     ", headers.cookie or "(none yet: reload the page)")
ngx.say()
ngx.say("All request headers:")
local names = {}
for name in pairs(headers) do
    names[#names + 1] = name
end
table.sort(names)
for _, name in ipairs(names) do
    local value = headers[name]
    if type(value) == "table" then
        value = table.concat(value, ", ")
    end
    ngx.say("  ", name, ": ", value)
end
