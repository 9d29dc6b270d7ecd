return ngx.redirect("/hello.lua")
