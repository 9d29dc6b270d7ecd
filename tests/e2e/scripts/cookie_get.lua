-- ngx.var.cookie_NAME and $http_cookie, also with several Cookie headers
for _, name in ipairs({ "a", "b", "c", "missing" }) do
    ngx.say("cookie_", name, " = ", ngx.var["cookie_" .. name] or "nil")
end
ngx.say("http_cookie = ", ngx.var.http_cookie or "nil")
local h = ngx.req.get_headers()["cookie"]
ngx.say("header = ", type(h) == "table" and table.concat(h, " | ") or h or "nil")
