-- a module for require_toplevel.lua
return { value = "loaded" }
