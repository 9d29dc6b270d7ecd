-- test_e2e_limits.py: stopped by the default lua_memory_limit (256m)
local t = {}
while true do
    t[#t + 1] = string.rep("x", 1000) .. #t
end
