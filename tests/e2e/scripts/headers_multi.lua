-- A request header sent twice comes back as a table, as in OpenResty.
local v = ngx.req.get_headers()["x-multi"]
if type(v) == "table" then
    ngx.say("table: ", table.concat(v, "|"))
else
    ngx.say(type(v), ": ", tostring(v))
end
