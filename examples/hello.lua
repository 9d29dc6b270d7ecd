local args = ngx.req.get_uri_args()
local name = args.name or "world"
ngx.header["Content-Type"] = "text/html; charset=utf-8"
ngx.say("<h1>Hello, ", ngx.escape_uri(name), "!</h1>")
ngx.say("<p>", ngx.req.get_method(), " ", ngx.var.request_uri, "</p>")
ngx.flush()          -- the first bytes leave now
ngx.sleep(0.5)       -- yields: the worker serves other requests meanwhile
ngx.say("<p>served at ", ngx.http_time(ngx.time()), "</p>")
ngx.log(ngx.INFO, "greeted ", name)
