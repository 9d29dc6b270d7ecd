-- mk.request.parsedata(): urlencoded and multipart (files keep their name)
local r = mk.request
local first, all = r.parsedata()
local names = {}
for k in pairs(all) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
    local values = {}
    for i, v in ipairs(all[k]) do
        if type(v) == "table" then
            local f = io.open(v.path, "rb")
            local data = f:read("*a")
            f:close()
            values[i] = string.format("file(%s, %s, %d bytes: %s)", v.filename,
                                      v.content_type or "?", v.size, data)
        else
            values[i] = v
        end
    end
    local f = first[k]
    mk.print(k .. " = " .. (type(f) == "table" and f.filename or f) .. " | "
             .. table.concat(values, ", "))
end
mk.print("method " .. r.request_method .. ", data bytes " .. #r.data)
