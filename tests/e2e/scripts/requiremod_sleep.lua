-- a module for require_toplevel.lua whose top level yields
ngx.sleep(0.001)
return { value = "slept" }
