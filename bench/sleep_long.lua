-- A request that waits: ?s=seconds (default 5).  bench/openresty.py's
-- memory run holds 10,000 of these at once.
ngx.sleep(tonumber(ngx.var.arg_s) or 5)
ngx.say("ok")
