-- A small JSON API, as the first script of an API usually is: GET answers
-- a document, POST reads one and answers what it understood, and a body
-- that is not JSON gets a 400 with the reason.  cjson is the Lua C module
-- OpenResty bundles (Debian: lua-cjson); "cjson.safe" returns nil, err
-- where "cjson" would raise.
local cjson = require "cjson.safe"

ngx.header["Content-Type"] = "application/json"

local method = ngx.req.get_method()
if method == "GET" then
    local args = ngx.req.get_uri_args()
    ngx.say(cjson.encode({
        hello = args.name or "world",
        time = ngx.time(),
        worker = ngx.worker.id(),
    }))
    return
end

if method ~= "POST" then
    ngx.status = ngx.HTTP_NOT_ALLOWED
    ngx.header["Allow"] = "GET, POST"
    ngx.say(cjson.encode({ error = "use GET or POST" }))
    return
end

ngx.req.read_body()
local doc, err = cjson.decode(ngx.req.get_body_data() or "")
if type(doc) ~= "table" then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.say(cjson.encode({ error = "expected a JSON object: " .. (err or "got " .. type(doc)) }))
    return
end
local keys = {}
for key in pairs(doc) do
    keys[#keys + 1] = tostring(key)
end
table.sort(keys)
ngx.say(cjson.encode({ received = doc, keys = keys }))
