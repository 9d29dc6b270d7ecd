-- an error in a light thread is logged; the other threads carry on
local bad = ngx.thread.spawn(function() ngx.sleep(0.01) error("thread boom") end)
local good = ngx.thread.spawn(function() ngx.sleep(0.02) return "fine" end)
local ok, err = ngx.thread.wait(bad)
ngx.say(ok, " ", string.find(tostring(err), "thread boom", 1, true) ~= nil)
ngx.say(ngx.thread.wait(good))
