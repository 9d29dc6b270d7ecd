ngx.say("Hello, world!")
