-- Text from the request goes into HTML escaped (ngx.escape_uri is for URLs:
-- it would show "John%20Smith").
local function html(s)
    return (string.gsub(s, "[&<>\"']", {
        ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;",
    }))
end

local args = ngx.req.get_uri_args()
local name = args.name
if type(name) ~= "string" or name == "" then -- ?name=a&name=b is a table, ?name a boolean
    name = "world"
end
ngx.header["Content-Type"] = "text/html; charset=utf-8"
ngx.say("<h1>Hello, ", html(name), "!</h1>")
ngx.say("<p>", ngx.req.get_method(), " ", html(ngx.var.request_uri), "</p>")
ngx.flush()          -- the first bytes leave now
ngx.sleep(0.5)       -- yields: the worker serves other requests meanwhile
ngx.say("<p>served at ", ngx.http_time(ngx.time()), "</p>")
ngx.log(ngx.INFO, "greeted ", name)
