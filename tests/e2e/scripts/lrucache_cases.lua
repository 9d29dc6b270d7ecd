-- Debian's lua-resty-lrucache, both implementations, unmodified: every
-- line must equal OpenResty's (test_e2e_lrucache.py).
local function show(v)
    if type(v) == "table" then
        local parts = {}
        for i = 1, #v do
            parts[i] = tostring(v[i])
        end
        return "{" .. table.concat(parts, ",") .. "}"
    end
    return tostring(v)
end

local function line(...)
    local parts = {}
    for i = 1, select("#", ...) do
        parts[i] = show((select(i, ...)))
    end
    ngx.say(table.concat(parts, " "))
end

for _, name in ipairs({ "resty.lrucache", "resty.lrucache.pureffi" }) do
    local lrucache = require(name)
    ngx.say("== ", name, " ", type(lrucache._VERSION))
    line("new(0):", lrucache.new(0))
    local c = assert(lrucache.new(3))
    line("empty:", c:count(), c:capacity(), c:get("a"), c:get_keys())
    c:set("a", 1)
    c:set("b", "two", nil, 7)
    c:set("c", { 3 })
    line("abc:", c:count(), c:get("a"), c:get("b"), c:get("c")[1], c:get_keys())
    c:set("d", 4) -- evicts the least recently used: a
    line("d evicts a:", c:count(), c:get("a"), c:get("d"), c:get_keys())
    c:get("b")
    c:set("e", 5) -- now c is the oldest
    line("e evicts c:", c:get("c"), c:get_keys(), c:get_keys(2))
    c:set("b", "again", nil, -1)
    line("overwrite:", c:count(), c:get("b"), c:get_keys())
    line("delete:", c:delete("d"), c:delete("nope"), c:count(), c:get("d"), c:get_keys())
    c:set("f", false)
    line("false:", c:get("f"), c:count())
    c:set("t", "short", 0.001, 3)
    c:set("long", "lived", 100)
    ngx.sleep(0.01)
    ngx.update_time()
    line("expired:", c:get("t"))
    line("alive:", c:get("long"))
    line("keys:", c:get_keys(), c:count())
    c:flush_all()
    line("flushed:", c:count(), c:get("long"), c:get_keys())
    for i = 1, 10 do
        c:set("k" .. i, i)
    end
    line("reused:", c:count(), c:get("k8"), c:get("k1"), c:get_keys())
    local big = lrucache.new(1000)
    for i = 1, 2000 do
        big:set("key" .. i, i)
    end
    local sum = 0
    for i = 1, 2000 do
        sum = sum + (big:get("key" .. i) or 0)
    end
    line("big:", big:count(), sum, #big:get_keys(5), big:get_keys(3))
end
