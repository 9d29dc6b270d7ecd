-- several Set-Cookie headers at once, then one more appended
ngx.header["Set-Cookie"] = { "a=1; Path=/", "b=2; HttpOnly; Secure" }
local old = ngx.header["Set-Cookie"]
old[#old + 1] = "c=3; Max-Age=60; SameSite=Lax"
ngx.header["Set-Cookie"] = old
ngx.say("set ", #old)
