-- First line goes out at once (flush before the end), the rest 1 s later.
ngx.say("first")
ngx.flush(true)
ngx.sleep(1)
ngx.say("last")
