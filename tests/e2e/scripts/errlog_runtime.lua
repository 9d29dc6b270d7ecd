-- test_e2e_errors.py: an ngx.log line, then an error two calls deep
local function inner()
    local t = nil
    return t.field
end
local function outer()
    return inner()
end
ngx.log(ngx.ERR, "errlog about to fail")
outer()
