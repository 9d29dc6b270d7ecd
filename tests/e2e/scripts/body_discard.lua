ngx.req.discard_body()
ngx.req.read_body()
ngx.say("discarded: ", tostring(ngx.req.get_body_data()), " ", tostring(ngx.req.get_body_file()))
