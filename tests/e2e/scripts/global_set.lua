leaked_global = "set by an earlier request"
ngx.say("set")
