#!/usr/bin/env lua
-- a CGI script: headers and body with print
print("Content-Type: text/html; charset=utf-8")
print("Set-Cookie: a=1; Path=/")
print("Set-Cookie: b=2; Path=/")
print("X-Cgi: hello")
print("")
print("<h1>Hello from CGI</h1>")
print("<p>method=" .. os.getenv("REQUEST_METHOD") .. " query=" .. os.getenv("QUERY_STRING") .. "</p>")
print("<p>gateway=" .. tostring(os.getenv("GATEWAY_INTERFACE")) .. "</p>")
