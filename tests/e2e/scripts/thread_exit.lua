-- ngx.exit in a light thread ends the request and every other thread
ngx.header["X-Threads"] = "yes"
ngx.thread.spawn(function() ngx.sleep(0.02) ngx.exit(403) end)
ngx.thread.spawn(function() ngx.sleep(5) ngx.say("never") end)
ngx.sleep(5)
ngx.say("never either")
