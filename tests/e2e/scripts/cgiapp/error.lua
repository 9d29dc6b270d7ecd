#!/usr/bin/env lua
-- cgiapp: error pages, then os.exit: from a module (?in=module) or here.
package.path = "lib/?.lua;?.lua"
local page = require "page"

if os.getenv("QUERY_STRING") == "in=module" then
    page.fail(404, "no such page")
end
io.write("Status: 503 Service Unavailable\r\n")
io.write("Content-Type: text/html\r\n")
io.write("Retry-After: 120\r\n\r\n")
io.write("<h1>down for maintenance</h1>\r\n")
io.stdout:flush()
os.exit(1)
print("never printed")
