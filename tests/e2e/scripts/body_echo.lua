-- Where the body went (memory or temp file), its size and md5, and its
-- form arguments when it is in memory.  Runs under fcgi-lua and OpenResty.
ngx.req.read_body()
local data = ngx.req.get_body_data()
local path = ngx.req.get_body_file()
local where = "none"
if data then
    where = "memory"
elseif path then
    where = "file"
    local f = assert(io.open(path, "rb"))
    data = f:read("*a")
    f:close()
end
ngx.say("where: ", where)
ngx.say("size: ", data and #data or 0)
ngx.say("md5: ", ngx.md5(data or ""))
if where ~= "file" then
    local max = tonumber(ngx.var.arg_max)
    local args, err -- (OpenResty: an explicit nil max is an error)
    if max then
        args, err = ngx.req.get_post_args(max)
    else
        args, err = ngx.req.get_post_args()
    end
    local names = {}
    for name in pairs(args) do
        names[#names + 1] = name
    end
    table.sort(names)
    for _, name in ipairs(names) do
        local v = args[name]
        if type(v) == "table" then
            for i = 1, #v do
                v[i] = tostring(v[i])
            end
            v = "{" .. table.concat(v, ",") .. "}"
        end
        ngx.say("arg ", name, " = ", tostring(v))
    end
    ngx.say("err: ", tostring(err))
end
