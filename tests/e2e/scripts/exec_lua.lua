-- internal redirect to another script, with args
ngx.exec("/exec_target.lua", { b = "2 3" })
