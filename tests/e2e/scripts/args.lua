-- Query arguments, sorted so the output is deterministic.
local args = ngx.req.get_uri_args()
local names = {}
for name in pairs(args) do
    names[#names + 1] = name
end
table.sort(names)
for _, name in ipairs(names) do
    local value = args[name]
    if type(value) == "table" then
        local parts = {}
        for i, v in ipairs(value) do
            parts[i] = tostring(v)
        end
        ngx.say(name, " = [", table.concat(parts, ", "), "]")
    else
        ngx.say(name, " = ", tostring(value), " (", type(value), ")")
    end
end
