ngx.say("target uri=", ngx.var.uri, " args=", ngx.var.args or "nil")
