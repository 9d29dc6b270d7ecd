-- Debian's lua-nginx-cookie (lua-resty-cookie), unmodified
local ck = require "nginx.cookie"
local cookie, err = ck:new()
if not cookie then
    ngx.say("new failed: ", err)
    return
end
-- set before any output: ngx.say sends the headers
assert(cookie:set({ key = "session", value = "s1", path = "/", domain = "example.com",
                    secure = true, httponly = true,
                    expires = "Wed, 09 Jun 2038 10:18:14 GMT", max_age = 3600,
                    extension = "SameSite=Strict" }))
assert(cookie:set({ key = "plain", value = "p" }))
assert(cookie:set({ key = "plain", value = "p" })) -- a duplicate is not added twice
assert(cookie:set({ key = "third", value = "3", path = "/sub" }))
local ok, bad = cookie:set({ key = "novalue" })
ngx.say("a = ", cookie:get("a") or "nil")
local all, err2 = cookie:get_all()
if not all then
    ngx.say("get_all: ", err2)
else
    local names = {}
    for k in pairs(all) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do ngx.say(k, " => ", all[k]) end
end
ngx.say("missing value: ", tostring(ok), " ", bad)
ngx.say("done")
