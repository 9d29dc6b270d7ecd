-- test_e2e_errors.py: a bad argument to an ngx.* function (fcgi-lua's are Lua)
local function f()
    local m = ngx.re.match("x", nil)
    return m
end
f()
