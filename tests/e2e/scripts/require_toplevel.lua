-- require of a module whose top level waits (ngx.sleep, a cosocket
-- connect): both fcgi-lua and OpenResty's LuaJIT implement require in C,
-- so the yield cannot cross it.  Modules: requiremod_*.lua next to this.
local dir = string.match(ngx.var.request_filename, "^(.*)/[^/]*$")
package.path = dir .. "/?.lua;" .. package.path
local ok, err = pcall(require, "requiremod_plain")
ngx.say("plain: ", ok, " ", type(err) == "table" and err.value or tostring(err))
ok, err = pcall(require, "requiremod_sleep")
ngx.say("sleep: ", ok, " ", (tostring(err):gsub("^.*: ", "")))
ok, err = pcall(require, "requiremod_sleep")
ngx.say("again: ", ok, " ", (tostring(err):gsub("^.*: ", "")))
