-- Response headers: their store on the request, ngx.header and
-- ngx.resp.get_headers (ngx_http_lua_headers.c, _headers_out.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local ipairs = ipairs
local error = error
local rawget = rawget
local rawset = rawset
local setmetatable = setmetatable
local byte = string.byte
local gsub = string.gsub
local find = string.find
local lower = string.lower
local format = string.format
local match = string.match
local unpack = unpack or table.unpack
local DEFAULT_TYPE = helpers.default_type

local add_arg = core.add_arg -- string.lua
local check_max = core.check_max -- string.lua
local log_error = core.log_error -- log.lua
local no_request = core.no_request
local num2str = core.num2str -- log.lua

-- Response headers: r.hkeys lists normalised keys in first-set order;
-- r.hvals[key] = { name = "As-Set", value, ... }.  Both start as the one
-- shared empty table NO_HEADERS (most scripts set none), replaced by the
-- request's own on the first header set (new_header).
local NO_HEADERS = setmetatable({}, { __newindex = function() error("NO_HEADERS is read-only") end })

local function new_header(r, key, h)
    local hkeys = r.hkeys
    if hkeys == NO_HEADERS then
        hkeys = {}
        r.hkeys = hkeys
        r.hvals = {}
    end
    local pos = #hkeys + 1
    hkeys[pos] = key
    h.pos = pos
    r.hvals[key] = h
    return h
end
-- What ngx_http_lua_escape_uri's header_name / header_value types escape:
-- a name's separators and control bytes (the name stays one name: "a b:c"
-- is sent as "a%20b%3Ac", and found by that name), a value's control bytes
-- but tab
local UNSAFE_NAME = '[%z\1-\32"(),/:;<=>?@%[\\%]{}\127-\255]'
local UNSAFE_VALUE = "[%z\1-\8\10-\31\127]"

local function escape_header(s, unsafe)
    if find(s, unsafe) then
        s = gsub(s, unsafe, function(c) return format("%%%02X", byte(c)) end)
    end
    return s
end

local function header_key(name)
    return lower((gsub(name, "_", "-")))
end

local SINGLE_VALUE = {
    ["content-type"] = true, ["content-length"] = true, ["location"] = true,
    ["last-modified"] = true, ["etag"] = true,
}
local CANONICAL = { ["content-type"] = "Content-Type", ["content-length"] = "Content-Length" }

local function header_value(v)
    local t = type(v)
    if t == "string" then
        return escape_header(v, UNSAFE_VALUE)
    elseif t == "number" then
        return num2str(v)
    elseif t == "boolean" then
        return v and "true" or "false"
    end
    error("invalid header value type: " .. t, 3)
end

local function set_header(r, name, value)
    -- stored (and found again) by its escaped name, as in OpenResty
    name = escape_header(name, UNSAFE_NAME)
    local key = header_key(name)
    local values
    if value ~= nil then
        if type(value) == "table" then
            values = {}
            for i = 1, #value do
                values[i] = header_value(value[i])
            end
            if #values == 0 then
                values = nil
            elseif SINGLE_VALUE[key] then
                values = { values[#values] }
            end
        else
            values = { header_value(value) }
        end
    end
    local h = r.hvals[key]
    if not values then
        if h then
            r.hvals[key] = nil
        end
        return
    end
    if key == "content-length" and not match(values[#values], "^%s*%d+%s*$") then
        error("failed to set header", 3) -- as nginx refuses it: a 500
    end
    if h then
        -- overwriting keeps the first name and position (as nginx does)
        for i = #h, 1, -1 do
            h[i] = nil
        end
    else
        h = new_header(r, key, {
            name = CANONICAL[key] or (gsub(name, "_", "-")),
        })
    end
    for i = 1, #values do
        h[i] = values[i]
    end
end

local header_mt = {
    __index = function(_, name)
        local r = core.cur or no_request()
        if type(name) == "number" then
            name = num2str(name)
        elseif type(name) ~= "string" then
            return nil
        end
        local h = r.hvals[header_key(name)]
        if not h then
            return nil
        end
        if #h == 1 then
            return h[1]
        end
        return { unpack(h) }
    end,
    __newindex = function(_, name, value)
        local r = core.cur or no_request()
        if r.header_sent then
            log_error("attempt to set ngx.header.HEADER after sending out response headers")
            return
        end
        if type(name) == "number" then
            name = num2str(name) -- ngx.header[32]: a header named "32"
        elseif type(name) ~= "string" then
            error("bad argument #2 to '__newindex' (string expected, got " .. type(name) .. ")",
                  2)
        end
        set_header(r, name, value)
    end,
}
ngx.header = setmetatable({}, header_mt)

ngx.resp = {}

-- Any spelling finds a header (Foo, foo, x_under for X-Under), as with
-- lua-nginx-module's metatable on the non-raw table.
local resp_headers_mt = {
    __index = function(t, key)
        if type(key) ~= "string" then
            return nil
        end
        return rawget(t, header_key(key))
    end,
}

function ngx.resp.get_headers(max, raw)
    local r = core.cur or no_request()
    max = check_max(max, "get_headers", 1)
    local res, n = {}, 0
    if not raw then
        setmetatable(res, resp_headers_mt)
    end
    -- nginx gives a response its default Content-Type as soon as a header
    -- is set (ngx_http_set_content_type): it is one of the headers counted.
    if r.hkeys[1] and not r.hvals["content-type"] then
        if max > 0 and n >= max then
            return res, "truncated"
        end
        n = 1
        rawset(res, raw and "Content-Type" or "content-type", DEFAULT_TYPE)
    end
    for i, key in ipairs(r.hkeys) do
        local h = r.hvals[key]
        if h and h.pos == i then
            for j = 1, #h do
                if max > 0 and n >= max then
                    return res, "truncated"
                end
                n = n + 1
                add_arg(res, raw and h.name or key, h[j])
            end
        end
    end
    return res
end

core.header_key = header_key
core.new_header = new_header
core.set_header = set_header
core.NO_HEADERS = NO_HEADERS
