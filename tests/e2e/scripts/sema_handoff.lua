-- one worker-wide semaphore: ?role=wait blocks until ?role=post posts
local sema = package.loaded.e2e_sema
if not sema then
    sema = require("ngx.semaphore").new(0)
    package.loaded.e2e_sema = sema
end
if ngx.var.arg_role == "wait" then
    local ok, err = sema:wait(5)
    ngx.say("waited ", tostring(ok), " ", tostring(err), " ", sema:count())
else
    ngx.say("posted ", tostring(sema:post(1)))
end
