-- OpenResty's module name resolves to Debian's nginx/cookie.lua
local ck = require "resty.cookie"
ngx.say(ck == require "nginx.cookie", " ", ck._VERSION)
local cookie = ck:new()
ngx.say(cookie:get("x") or "nil")
