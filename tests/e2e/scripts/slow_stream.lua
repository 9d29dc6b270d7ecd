-- Streams for ~3 s; the disconnect test closes the client after "tick 1".
for i = 1, 30 do
    ngx.say("tick ", i)
    ngx.flush(true)
    ngx.sleep(0.1)
end
