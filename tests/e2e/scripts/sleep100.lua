ngx.sleep(0.1)
ngx.say("ok")
