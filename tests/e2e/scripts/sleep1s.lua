ngx.sleep(1)
ngx.say("ok")
