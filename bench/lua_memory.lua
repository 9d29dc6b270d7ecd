-- The worker's Lua heap in KB (bench/openresty.py's memory run); ?collect=1
-- runs a full garbage collection first.
if ngx.var.arg_collect then
    collectgarbage()
end
ngx.say(string.format("%.0f", collectgarbage("count")))
