ngx.say("too late")
local ok, err = pcall(ngx.exec, "/exec_target.lua")
ngx.say(ok, " ", err)
