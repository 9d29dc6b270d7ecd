-- ngx.req.get_multipart() (fcgi-lua): fields, then each file with its md5
-- (files up to 8 MB; larger ones are not read into Lua).  With ?keep=DIR
-- each file is moved there (the script owns a moved file).
local res, err = ngx.req.get_multipart()
if not res then
    ngx.status = 400
    ngx.say("error: ", err)
    return
end
local names = {}
for name in pairs(res.fields) do
    names[#names + 1] = name
end
table.sort(names)
for _, name in ipairs(names) do
    local v = res.fields[name]
    if type(v) == "table" then
        v = "{" .. table.concat(v, ",") .. "}"
    end
    ngx.say("field ", name, " = ", v)
end
local keep = ngx.var.arg_keep
for i, f in ipairs(res.files) do
    local md5 = "-"
    if f.size <= 8 * 1024 * 1024 then
        local h = assert(io.open(f.path, "rb"))
        md5 = ngx.md5(h:read("*a"))
        h:close()
    end
    ngx.say("file ", i, " ", f.name, " ", f.filename, " ", f.content_type, " ", f.size, " ", md5)
    if keep then
        assert(os.rename(f.path, keep .. "/" .. i .. "-" .. f.filename))
    end
end
ngx.say("truncated: ", tostring(err))
