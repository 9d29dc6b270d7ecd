ngx.status = 201
ngx.header["Content-Type"] = "text/plain"
ngx.say("created")
