-- OpenResty's module names resolve to Debian's nginx/*.lua files
local str = require "resty.string"
ngx.say(str == require "nginx.string", " ", require "resty.md5" == require "nginx.md5", " ",
        require "resty.aes" == require "nginx.aes", " ", str._VERSION)
local md5 = require("resty.md5"):new()
md5:update("abc")
ngx.say(str.to_hex(md5:final()))
