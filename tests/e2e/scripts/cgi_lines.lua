#!/usr/bin/env lua
-- a CGI script: reads the body line by line with io.lines
io.write("Content-Type: text/plain\n\n")
local n = 0
for line in io.lines() do
    n = n + 1
    io.write(n, ": ", line, "\n")
end
io.write("lines=", n, "\n")
