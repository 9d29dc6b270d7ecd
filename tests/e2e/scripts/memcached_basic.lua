-- lua-resty-memcached (Debian's lua-nginx-memcached), unmodified, against a
-- real memcached: set/get/delete, flags, add/replace, incr, multi-get, a
-- key that needs escaping.  ?port= memcached's port, ?key= a key prefix.
local ok, memcached = pcall(require, "resty.memcached")
if not ok then
    memcached = require "nginx.memcached"
end

local port = tonumber(ngx.var.arg_port)
local prefix = ngx.var.arg_key
local memc, err = memcached:new()
if not memc then
    ngx.say("failed to instantiate memc: ", err)
    return
end
memc:set_timeout(1000)
local ok, err = memc:connect("127.0.0.1", port)
if not ok then
    ngx.say("failed to connect: ", err)
    return
end

local function key(name)
    return prefix .. "-" .. name
end

ngx.say("set: ", memc:set(key("dog"), 32))
ngx.say("get: ", memc:get(key("dog")))
ngx.say("set flags: ", memc:set(key("cat"), "meow", 0, 123))
local value, flags = memc:get(key("cat"))
ngx.say("get flags: ", value, " ", flags)
ngx.say("get missing: ", memc:get(key("missing")))
ngx.say("add existing: ", memc:add(key("dog"), 1))
ngx.say("replace: ", memc:replace(key("dog"), "hound"))
ngx.say("append: ", memc:append(key("dog"), "!"))
ngx.say("get: ", memc:get(key("dog")))
ngx.say("set table: ", memc:set(key("list"), { "a", { "b", 3 } }))
ngx.say("get table: ", memc:get(key("list")))
ngx.say("set counter: ", memc:set(key("n"), 10))
ngx.say("incr: ", memc:incr(key("n"), 5))
ngx.say("decr: ", memc:decr(key("n"), 20))
ngx.say("incr not a number: ", memc:incr(key("cat"), 1))
local results = memc:get({ key("dog"), key("cat"), key("missing") })
ngx.say("multi-get: ", results[key("dog")][1], " ", results[key("cat")][1], "/",
        results[key("cat")][2], " ", tostring(results[key("missing")]))
ngx.say("escaped key: ", memc:set(key("a key/with spaces"), "x"), " ",
        memc:get(key("a key/with spaces")))
local value, flags, cas = memc:gets(key("dog"))
ngx.say("gets: ", value, " ", flags, " ", type(cas))
ngx.say("cas: ", memc:cas(key("dog"), "swapped", cas))
ngx.say("cas stale: ", memc:cas(key("dog"), "again", cas))
ngx.say("delete: ", memc:delete(key("dog")))
ngx.say("delete again: ", memc:delete(key("dog")))
ngx.say("get deleted: ", memc:get(key("dog")))
ngx.say("big value: ", memc:set(key("big"), string.rep("x", 100000)), " ",
        #(memc:get(key("big"))))
ngx.say("version: ", type(memc:version()))
ngx.say("close: ", memc:close())
