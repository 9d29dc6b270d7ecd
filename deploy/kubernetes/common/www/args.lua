-- Query arguments, the way ngx.req.get_uri_args() returns them:
-- ?a=1&a=2&flag  ->  a = {"1", "2"}, flag = true
ngx.header["Content-Type"] = "text/plain; charset=utf-8"

local args = ngx.req.get_uri_args()
local names = {}
for name in pairs(args) do
    names[#names + 1] = name
end
table.sort(names)

if #names == 0 then
    ngx.say("no query arguments; try /args.lua?a=1&a=2&flag&name=Lua")
end
for _, name in ipairs(names) do
    local value = args[name]
    if type(value) == "table" then
        ngx.say(name, " = { ", table.concat(value, ", "), " }  (repeated)")
    elseif value == true then
        ngx.say(name, " = true  (no value)")
    else
        ngx.say(name, " = ", value)
    end
end
