#!/usr/bin/env lua
-- cgiapp (test_e2e_cgi.py): a CGI application of three scripts and two
-- shared modules, run by fcgi-lua and, as the oracle, by fcgiwrap.
-- Modules come from a package.path relative to the script's directory.
package.path = "lib/?.lua;?.lua"
local page = require "page"
local util = require "util"
local site = dofile("conf/site.lua")

page.header("text/html; charset=utf-8", { "X-App: " .. site.name })
page.top(site.title)
local q = util.parse_query(os.getenv("QUERY_STRING") or "")
print("<p>hello " .. util.escape(q.name or "nobody") .. "</p>")
for line in io.lines("data/motd.txt") do
    print("<p>motd: " .. util.escape(line) .. "</p>")
end
local check = loadfile("conf/check.lua")
print("<p>check: " .. check() .. "</p>")
print("<p>same page module: " .. tostring(util.page == page) .. "</p>")
page.bottom()
