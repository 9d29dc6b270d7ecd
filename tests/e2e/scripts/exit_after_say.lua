ngx.say("before")
ngx.exit(ngx.HTTP_OK)
ngx.say("never")
