-- Which cjson.so a runtime loads (tests/e2e/test_e2e_cjson.py), and that
-- ngx.null is cjson.null there.
local cjson = require "cjson"
local where = "?"
for template in package.cpath:gmatch("[^;]+") do
    local path = template:gsub("%?", "cjson")
    local f = io.open(path)
    if f then
        f:close()
        where = path
        break
    end
end
ngx.say("cjson ", where, " ", cjson._VERSION)
ngx.say("null ", cjson.encode({ a = ngx.null }), " ", tostring(ngx.null == cjson.null))
