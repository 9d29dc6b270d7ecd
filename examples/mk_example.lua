-- The Monkey Lua plugin's example, in its style: globals, the plugin's
-- tables, dot calls, mk.print joining lines with "\n".  Written for
-- fcgi-lua's tests (docs/mk-api.md); it runs unchanged under the plugin.
config = mk.config
r = mk.request
rs = mk.response

-- a table as sorted "key = value" lines, nested tables inline
function dump(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local lines = {}
    for _, k in ipairs(keys) do
        local v = t[k]
        if v == nil then v = t[tonumber(k)] end
        if type(v) == "table" then
            local items = {}
            for i, x in ipairs(v) do items[i] = string.format("%q", tostring(x)) end
            v = "{" .. table.concat(items, ", ") .. "}"
        else
            v = string.format("%q", tostring(v))
        end
        lines[#lines + 1] = k .. " = " .. v
    end
    return "{" .. table.concat(lines, "; ") .. "}"
end

rs.status = 200
rs.headers["Content-Type"] = "text/html; charset=utf-8"
mk.print("Hello World")

i = 1
for k, v in pairs(r) do
    if type(v) ~= "function" and type(v) ~= "table" then
        mk.print(i .. " " .. k .. " " .. tostring(v))
        i = i + 1
    end
end

t1, t2 = r.parseargs()
p1, p2 = r.parsedata()

mk.print("args " .. dump(t1))
mk.print("args all " .. dump(t2))
mk.print("data " .. dump(p1))
mk.print("data all " .. dump(p2))
mk.print("cookies " .. dump(mk.cookies.get_cookies()))

-- No domain and no secure flag: a browser on http://127.0.0.1 keeps these
-- (the plugin's own example sets domain = "monkey.com" and secure = true,
-- which such a browser drops; add them for a real HTTPS site).
mk.cookies.set_cookie{name = "name", value = "nithin", httponly = true,
                      expiry = os.time() + 60 * 60 * 8}
mk.cookie.set_cookie{name = "blog", value = "spelling",
                     expires = os.time() + 60 * 60 * 12}

mk.print("last line !")
