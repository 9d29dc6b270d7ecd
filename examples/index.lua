-- The start page: a form, what fcgi-lua saw of this request, and links to
-- the other examples.
local concat = table.concat
local gsub = string.gsub
local sort = table.sort

local function html(s)
    return (gsub(tostring(s), "[&<>\"]", {
        ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
    }))
end

local function rows(t)
    local names = {}
    for name in pairs(t) do
        names[#names + 1] = name
    end
    sort(names)
    local out = {}
    for _, name in ipairs(names) do
        local value = t[name]
        if type(value) == "table" then
            value = concat(value, ", ")
        end
        out[#out + 1] = "<tr><th>" .. html(name) .. "</th><td>" .. html(value) .. "</td></tr>"
    end
    return concat(out, "\n")
end

local args = ngx.req.get_uri_args()
local name = args.name
if type(name) ~= "string" or name == "" then
    name = "world"
end

ngx.header["Content-Type"] = "text/html; charset=utf-8"
ngx.say([[<!doctype html>
<html><head><meta charset="utf-8"><title>fcgi-lua</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th{text-align:left;padding-right:1em;width:30%;vertical-align:top}
td,th{border-bottom:1px solid #ddd;padding:.2em .4em}td{overflow-wrap:anywhere}
li{margin:.3em 0}details{margin-top:1.5em}summary{cursor:pointer;font-weight:bold}</style>
</head><body>]])
ngx.say("<h1>Hello, ", html(name), "!</h1>")
ngx.say([[<form method="get" action="/index.lua">
<label>Your name <input name="name" autofocus></label> <button>Greet me</button>
</form>
<h2>Examples</h2><ul>
<li><a href="/hello.lua?name=Lua">hello.lua</a>: flush, then sleep without blocking</li>
<li><a href="/args.lua?a=1&amp;a=2&amp;flag">args.lua</a>: query arguments as Lua values</li>
<li><a href="/json.lua?name=Lua">json.lua</a>: a JSON API with cjson (POST a document to it)</li>
<li><a href="/upload.lua">upload.lua</a>: a form and a file upload</li>
<li><a href="/cookies.lua">cookies.lua</a>: read, set and delete cookies</li>
<li><a href="/headers.lua">headers.lua</a>: request headers in, response headers out</li>
<li><a href="/countdown.lua">countdown.lua</a>: a response streamed one line a second</li>
<li><a href="/redirect.lua">redirect.lua</a>: ngx.redirect back here</li>
<li><a href="/visits.lua">visits.lua</a>: a visit counter in Redis through lua-resty-redis (cosockets)</li>
<li><a href="/mk_example.lua?a=1">mk_example.lua</a>: the Monkey Lua plugin's mk.* API</li>
<li><a href="/error.lua">error.lua</a>: a script error (500; traceback with --debug)</li>
<li><a href="/fcgi-status?html">fcgi-status</a>: the workers, requests and memory</li>
</ul>]])

-- What fcgi-lua saw of this request, folded away below the examples.
ngx.say("<details><summary>This request</summary><table>")
ngx.say(rows({
    method = ngx.req.get_method(),
    uri = ngx.var.uri,
    request_uri = ngx.var.request_uri,
    remote_addr = ngx.var.remote_addr,
    server_protocol = ngx.var.server_protocol,
}))
ngx.say("</table><h3>Query arguments</h3><table>", rows(args), "</table>")
ngx.say("<h3>Request headers</h3><table>", rows(ngx.req.get_headers()), "</table></details>")
ngx.say("</body></html>")
