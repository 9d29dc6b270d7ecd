-- cgiapp's util module, written the Lua 5.1 way (module + package.seeall)
module("util", package.seeall)

page = require "page"

function unescape(s)
    s = s:gsub("+", " ")
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function parse_query(q)
    local t = {}
    for k, v in q:gmatch("([^&=]+)=([^&]*)") do
        t[unescape(k)] = unescape(v)
    end
    return t
end

function escape(s)
    return (s:gsub("[<>&\"]", { ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ['"'] = "&quot;" }))
end
