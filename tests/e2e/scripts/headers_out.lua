ngx.header["Content-Type"] = "application/json"
ngx.header["X-Custom"] = "yes"
ngx.header.cache_control = "no-store"
ngx.header["Set-Cookie"] = { "a=1; Path=/", "b=2; HttpOnly", "c=3" }
ngx.say('{"ok":true}')
