#!/usr/bin/env lua
-- a CGI script using Debian's lua-cgi (CGILua) pure-Lua helper to parse
-- the query string and the urlencoded POST body
local urlcode = require "cgilua.urlcode"
local args = {}
urlcode.parsequery(os.getenv("QUERY_STRING") or "", args)
local n = tonumber(os.getenv("CONTENT_LENGTH")) or 0
if n > 0 then
    urlcode.parsequery(io.read(n), args)
end
io.write("Content-Type: text/plain\n\n")
local names = {}
for k in pairs(args) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
    local v = args[k]
    io.write(k, "=", type(v) == "table" and table.concat(v, ",") or v, "\n")
end
