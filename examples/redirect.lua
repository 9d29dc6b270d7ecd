-- ngx.redirect sends the status and Location and ends the request.
-- /redirect.lua?to=/args.lua%3Fx%3D1  goes there instead (local paths only).
local to = ngx.var.arg_to and ngx.unescape_uri(ngx.var.arg_to)
if not to or to:sub(1, 1) ~= "/" or to:sub(1, 2) == "//" then
    to = "/index.lua?name=redirected"
end
return ngx.redirect(to, ngx.HTTP_MOVED_TEMPORARILY)
