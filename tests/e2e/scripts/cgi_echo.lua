#!/usr/bin/env lua
-- a CGI script: reads the POST body from stdin and echoes it
local length = tonumber(os.getenv("CONTENT_LENGTH")) or 0
local body = io.read("*a") or ""
io.write("Content-Type: text/plain\r\n")
io.write("\r\n")
io.write("content_length=", length, " read=", #body, "\n")
io.stdout:write(body, "\n")
