#!/usr/bin/env lua
-- The same CGI script under fcgiwrap (a lua process per request) and
-- under fcgi-lua (CGI mode, marked by this "#!...lua" line).
print("Content-Type: text/plain")
print("")
print("Hello from CGI, " .. (os.getenv("QUERY_STRING") or "") .. "!")
