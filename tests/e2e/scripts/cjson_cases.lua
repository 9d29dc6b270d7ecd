-- lua-cjson cases, one line each: the same output is expected from
-- fcgi-lua and from OpenResty, which load the same Debian cjson.so
-- (tests/e2e/test_e2e_cjson.py).  Settings change on cjson.new()
-- instances only: the module's own settings are shared by every request.

local cjson = require "cjson"
local cjson_safe = require "cjson.safe"

local cases = {}
local function case(name, f)
    cases[#cases + 1] = { name, f }
end

-- Tables printed with sorted keys: iteration order is the VM's business.
local function show(v)
    if type(v) == "string" then
        return string.format("%q", v)
    end
    if type(v) ~= "table" then
        return tostring(v)
    end
    local keys = {}
    for k in pairs(v) do
        keys[#keys + 1] = k
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local out = {}
    for _, k in ipairs(keys) do
        out[#out + 1] = tostring(k) .. "=" .. show(v[k])
    end
    return "{" .. table.concat(out, ",") .. "}"
end

local function results(...)
    local out = {}
    for i = 1, select("#", ...) do
        out[i] = show((select(i, ...)))
    end
    return table.concat(out, " ")
end

local function enc(v, inst)
    return results(pcall(inst and inst.encode or cjson.encode, v))
end

local function dec(s, inst)
    return results(pcall(inst and inst.decode or cjson.decode, s))
end

-- encode: shapes
case("nested", function() return enc({ a = { b = { c = { 1, 2, { d = "x" } } } } }) end)
case("array", function() return enc({ 1, "two", true, false, { 3 } }) end)
case("empty table", function() return enc({}) end)
case("nested empty", function() return enc({ a = {} }) end)
case("holes", function() return enc({ 1, nil, 3 }) end)
case("sparse ok", function() return enc({ [1] = 1, [4] = 4 }) end)
case("excessively sparse", function() return enc({ [20] = 1 }) end)
case("mixed keys", function() return enc({ [1] = "a", [2] = "b", x = 1 }) end)
case("number keys", function() return enc({ [1.5] = "a" }) end)
case("bad key", function() return enc({ [true] = 1 }) end)
case("function", function() return enc({ f = print }) end)
case("deep", function()
    local t = {}
    local cur = t
    for _ = 1, 1100 do
        cur[1] = {}
        cur = cur[1]
    end
    return enc(t)
end)
case("string", function() return enc("plain") end)
case("scalars", function() return enc(true) .. " " .. enc(12) .. " " .. enc(cjson.null) end)
case("multi-key object", function()
    local s = cjson.encode({ alpha = 1, beta = 2, gamma = 3, delta = 4 })
    return #s .. " " .. show(cjson.decode(s))
end)

-- null
case("cjson.null", function() return enc({ a = cjson.null }) .. " " .. type(cjson.null) end)
case("ngx.null", function() return enc({ a = ngx.null }) .. " " .. enc({ ngx.null, 1 }) end)
case("null identity", function()
    return tostring(ngx.null == cjson.null) .. " " .. tostring(cjson.decode("null") == ngx.null)
        .. " " .. tostring(cjson.decode('{"a":null}').a == ngx.null) .. " " .. tostring(ngx.null)
end)

-- what OpenResty's own lua-cjson fork adds; absent from Debian's 2.1.0
case("fork extras", function()
    return table.concat({ type(cjson.empty_array), type(cjson.array_mt),
        type(cjson.empty_array_mt), type(cjson.encode_empty_table_as_object),
        type(cjson.decode_array_with_array_mt), type(cjson.encode_escape_forward_slash) }, " ")
end)
case("module fields", function()
    local keys = {}
    for k, v in pairs(cjson) do
        keys[#keys + 1] = k .. ":" .. type(v)
    end
    table.sort(keys)
    return cjson._VERSION .. " " .. cjson._NAME .. " " .. table.concat(keys, " ")
end)

-- numbers
for _, n in ipairs({ 0, -0.0, 1, -1, 0.1, 1 / 3, 2 / 3, 100, 1e15, 1e16, 2 ^ 53, 2 ^ 53 + 1,
                     2 ^ 63, 1e300, 1e-7, 123456.789, 3.14159265358979, -1.5e-300,
                     9007199254740993 }) do
    case("number " .. string.format("%.17g", n), function() return enc(n) .. " " .. enc({ n }) end)
end
case("inf", function() return enc(math.huge) end)
case("-inf", function() return enc(-math.huge) end)
case("nan", function() return enc(0 / 0) end)
for _, p in ipairs({ 1, 3, 10, 14 }) do
    case("precision " .. p, function()
        local inst = cjson.new()
        inst.encode_number_precision(p)
        return enc({ 1 / 3, 0.1, 123456.789, 2 ^ 53 }, inst)
    end)
end
case("precision bad", function()
    local inst = cjson.new()
    return results(pcall(inst.encode_number_precision, 0)) .. " "
        .. results(pcall(inst.encode_number_precision, 15)) .. " "
        .. results(pcall(inst.encode_number_precision, 16))
end)
case("invalid numbers on", function()
    local inst = cjson.new()
    inst.encode_invalid_numbers(true)
    return enc({ math.huge, -math.huge }, inst) .. " " .. dec("[Infinity, NaN, 0x10]", inst)
end)
case("invalid numbers null", function()
    local inst = cjson.new()
    inst.encode_invalid_numbers("null")
    return enc({ math.huge, 0 / 0 }, inst)
end)
case("sparse settings", function()
    local inst = cjson.new()
    return results(inst.encode_sparse_array(true, 2, 3)) .. " " .. enc({ [5] = 1 }, inst)
end)
case("max depth", function()
    local inst = cjson.new()
    inst.encode_max_depth(2)
    inst.decode_max_depth(2)
    return enc({ { { 1 } } }, inst) .. " " .. dec("[[[1]]]", inst)
end)

-- decode
for _, s in ipairs({ "1", "-0", "0.1", "1e2", "1E-2", "123456789012345678901234567890",
                     "9007199254740993", '"a\\/b"', '"\\u00e9\\u20ac\\ud83d\\ude00"',
                     '"\\b\\f\\n\\r\\t\\"\\\\"', "[1,2,[3,{\"a\":[]}]]", '{"a":{"b":{}}}',
                     "true", "null", "  [ ]  ", "{}", '"\\ud800"', "[1,]", "{a:1}", "01",
                     "", "[", '"\1"', "1 2", "nan", "[1e400]", '"\xff\xfe"' }) do
    case("decode " .. string.format("%q", s), function() return dec(s) end)
end

-- escaping
for _, s in ipairs({ "a/b", "é€😀", "\1\2\31", "\127", "\"\\", "\b\f\n\r\t", "\0",
                     "\xff\xfe invalid utf-8", "</script>" }) do
    case("escape " .. string.format("%q", s), function() return enc(s) .. " " .. enc({ s }) end)
end

-- cjson.safe: errors as nil, message
case("safe decode", function() return results(cjson_safe.decode("{bad")) end)
case("safe encode", function() return results(cjson_safe.encode({ f = print })) end)
case("safe ok", function() return results(cjson_safe.encode({ 1 })) .. " " .. results(cjson_safe.decode("[1]")) end)
case("safe is its own module", function() return tostring(cjson_safe ~= cjson) end)
case("decode error", function() return dec("[1, 2") end)
case("decode bad type", function() return dec(12) .. " " .. dec(nil) .. " " .. dec({}) end)
case("encode arity", function() return results(pcall(cjson.encode)) .. " " .. results(pcall(cjson.encode, 1, 2)) end)

for _, c in ipairs(cases) do
    ngx.say(c[1], ": ", c[2]())
end
