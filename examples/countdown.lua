-- A streamed response: each line leaves as soon as it is flushed.  Because
-- the script flushes before its headers went out, fcgi-lua sends
-- `X-Accel-Buffering: no` and nginx passes it through unbuffered.
ngx.header["Content-Type"] = "text/plain; charset=utf-8"

local from = tonumber(ngx.var.arg_from) or 5
if from > 30 then
    from = 30
end

for i = from, 1, -1 do
    ngx.say(i, "...")
    ngx.flush(true)     -- wait until the bytes are handed to nginx
    ngx.sleep(1)        -- yields: other requests run meanwhile
end
ngx.say("liftoff!")
