-- Echo the request body and its form arguments.
ngx.req.read_body()
local data = ngx.req.get_body_data()
ngx.say("method: ", ngx.req.get_method())
ngx.say("bytes: ", data and #data or 0)
ngx.say("body: ", data or "")
local args = ngx.req.get_post_args()
local names = {}
for name in pairs(args) do
    names[#names + 1] = name
end
table.sort(names)
for _, name in ipairs(names) do
    ngx.say("arg ", name, " = ", tostring(args[name]))
end
