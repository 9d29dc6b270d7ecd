#!/usr/bin/env lua
-- a CGI script: a redirect with Status and Location, then os.exit
io.write("Status: 302 Found\n")
io.write("Location: /cgi_hello.lua?from=redirect\n\n")
io.stdout:flush()
os.exit(0)
print("never printed")
