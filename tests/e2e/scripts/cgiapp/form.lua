#!/usr/bin/env lua
-- cgiapp: a POSTed form saved to a file under data/ (relative paths),
-- renamed, read back and removed.
package.path = "lib/?.lua;?.lua"
local util = require "util"
local page = require "page"

local form = util.parse_query(io.read("*a") or "")
if not form.note or form.note == "" then
    page.fail(400, "a note is required")
end
local id = (form.id or "x"):gsub("[^%w]", "")
local tmp = "data/note-" .. id .. ".tmp"
local final = "data/note-" .. id .. ".txt"
local f = assert(io.open(tmp, "w"))
f:write(form.note, "\n")
f:close()
assert(os.rename(tmp, final))
local saved = assert(io.open(final)):read("*a")
assert(os.remove(final))
local _, missing = io.open(final)

page.header("text/plain")
io.write("saved: ", saved)
print("after remove: " .. tostring(missing))
print("length: " .. (os.getenv("CONTENT_LENGTH") or "?"))
