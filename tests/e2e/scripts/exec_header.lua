-- X-Accel-Redirect set by hand passes through
ngx.header["X-Accel-Redirect"] = "/exec-internal/by-header"
ngx.say("ignored")
