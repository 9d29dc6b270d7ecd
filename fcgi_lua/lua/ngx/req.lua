-- ngx.req: method, URI, arguments and headers of the request
-- (ngx_http_lua_req_method.c, _uri.c, _args.c, _headers.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local error = error
local rawget = rawget
local setmetatable = setmetatable
local concat = table.concat
local byte = string.byte
local sub = string.sub
local gsub = string.gsub
local find = string.find
local lower = string.lower
local upper = string.upper
local format = string.format
local match = string.match

local add_arg = core.add_arg -- string.lua
local c_name = core.c_name -- string.lua
local check_max = core.check_max -- string.lua
local get_var = core.get_var -- var.lua
local no_request = core.no_request
local num2str = core.num2str -- log.lua
local params_of = core.params_of -- var.lua
local parse_args = core.parse_args -- string.lua

local req = {}
ngx.req = req

function req.get_method()
    local r = core.cur or no_request()
    return get_var(r, "request_method")
end

function req.http_version()
    local r = core.cur or no_request()
    local proto = get_var(r, "server_protocol")
    local v = proto and match(proto, "^HTTP/(%d+%.%d+)$")
    if v == "2.0" then
        return 2.0
    end
    return v and tonumber(v) or nil
end

function req.start_time()
    local r = core.cur or no_request()
    return r.start_time
end

function req.is_internal()
    return false
end

function req.get_uri_args(max)
    local r = core.cur or no_request()
    max = check_max(max, "get_uri_args", 1)
    return parse_args(get_var(r, "args") or "", max, true)
end

function req.set_uri_args(args)
    local r = core.cur or no_request()
    if type(args) == "table" then
        args = ngx.encode_args(args)
    elseif type(args) == "number" then
        args = num2str(args)
    elseif type(args) ~= "string" then
        error("bad argument #1 to 'set_uri_args' (string, number, or table expected, got "
              .. type(args) .. ")", 2)
    end
    r.var_set = r.var_set or {}
    r.var_set.args = args
    r.var_set.query_string = args
    r.var_set.is_args = args ~= "" and "?" or ""
end

-- ngx.req.set_uri(uri, jump?, binary?): $uri (and $document_uri) from now
-- on, as in OpenResty's content phase; jump (a new location match) is a
-- rewrite-phase feature OpenResty refuses here too.
function req.set_uri(...)
    local n = select("#", ...)
    if n < 1 or n > 3 then
        error("expecting 1, 2 or 3 arguments but seen " .. n, 2)
    end
    local r = core.cur or no_request()
    local uri, jump, binary = ...
    if type(uri) == "number" then
        uri = num2str(uri)
    elseif type(uri) ~= "string" then
        error("bad argument #1 to '" .. c_name("set_uri") .. "' (string expected, got "
              .. type(uri) .. ")", 2)
    end
    if uri == "" then
        error("attempt to use zero-length uri", 2)
    end
    if n >= 3 and type(binary) ~= "boolean" then
        error("bad argument #3 to '" .. c_name("set_uri") .. "' (boolean expected, got "
              .. type(binary) .. ")", 2)
    end
    if not binary then
        local bad = find(uri, "[%z\1-\8\10-\31\127]")
        if bad then
            local shown = gsub(uri, '[%z\1-\31"\\\127-\255]', function(c)
                return format("\\x%02X", byte(c))
            end)
            error(format('unsafe byte "0x%02x" in uri "%s" (maybe you want to set the '
                         .. "'binary' argument?)", byte(uri, bad), shown), 2)
        end
    end
    if n >= 2 then
        if type(jump) ~= "boolean" then
            error("bad argument #2 to '" .. c_name("set_uri") .. "' (boolean expected, got "
                  .. type(jump) .. ")", 2)
        end
        if jump then
            error("API disabled in the context of content_by_lua*", 2)
        end
    end
    r.var_set = r.var_set or {}
    r.var_set.uri = uri
    r.var_set.document_uri = uri
end

-- Header names come back from CGI params: HTTP_X_FOO is "x-foo" (or
-- "X-Foo" with raw), CONTENT_TYPE/LENGTH count when no HTTP_ copy came.
local function title_case(name)
    return (gsub(name, "(%w)(%w*)", function(a, b) return upper(a) .. b end))
end

local req_headers_mt = {
    __index = function(t, key)
        if type(key) ~= "string" then
            return nil
        end
        return rawget(t, lower((gsub(key, "_", "-"))))
    end,
}

local function each_request_header(r)
    local params = params_of(r)
    local list = r.header_list
    if list then
        return list
    end
    list = {}
    local has_ct, has_cl = false, false
    for i = 1, #params, 2 do
        local k = params[i]
        if sub(k, 1, 5) == "HTTP_" then
            local set = r.header_names -- names given to ngx.req.set_header
            local key = set and set[k] and lower(set[k]) or lower((gsub(sub(k, 6), "_", "-")))
            if key == "content-type" then
                has_ct = true
            elseif key == "content-length" then
                has_cl = true
            end
            list[#list + 1] = key
            list[#list + 1] = params[i + 1]
        end
    end
    for i = 1, #params, 2 do
        local k = params[i]
        if (k == "CONTENT_TYPE" and not has_ct) or (k == "CONTENT_LENGTH" and not has_cl) then
            if params[i + 1] ~= "" then
                list[#list + 1] = lower((gsub(k, "_", "-")))
                list[#list + 1] = params[i + 1]
            end
        end
    end
    r.header_list = list
    return list
end

function req.get_headers(max, raw)
    local r = core.cur or no_request()
    max = check_max(max, "get_headers", 1)
    local list = each_request_header(r)
    local res, n = {}, 0
    for i = 1, #list, 2 do
        if max > 0 and n >= max then
            if not raw then
                setmetatable(res, req_headers_mt)
            end
            return res, "truncated"
        end
        n = n + 1
        add_arg(res, raw and title_case(list[i]) or list[i], list[i + 1])
    end
    if not raw then
        setmetatable(res, req_headers_mt)
    end
    return res
end

-- ngx.req.set_header / clear_header: what get_headers() and ngx.var.http_*
-- see from now on, as in OpenResty's content phase (the front server has
-- sent the request already: nothing else changes).  Headers are CGI params
-- here; the name as given is kept for get_headers().
local function header_values(value)
    local t = type(value)
    if t == "string" then
        return value ~= "" and { value } or {}
    elseif t == "number" then
        return { num2str(value) }
    elseif t == "nil" then
        return {}
    elseif t == "boolean" then
        return { tostring(value) }
    elseif t == "table" then
        local values = {}
        for i = 1, #value do
            local v = value[i]
            if type(v) == "number" then
                v = num2str(v)
            elseif type(v) ~= "string" then
                error("bad argument #2 to 'set_header' (string expected, got " .. type(v) .. ")", 3)
            end
            values[#values + 1] = v
        end
        return values
    end
    return { tostring(value) }
end

function req.set_header(name, value)
    local r = core.cur or no_request()
    if type(name) == "number" then
        name = num2str(name)
    elseif type(name) ~= "string" then
        name = tostring(name) -- as OpenResty: any value names a header
    end
    local values = header_values(value)
    local key = "HTTP_" .. upper((gsub(name, "-", "_")))
    -- $content_type and $content_length do not follow (nginx 1.22 neither)
    local params, out = params_of(r), {}
    for i = 1, #params, 2 do
        local k = params[i]
        if k ~= key then
            out[#out + 1] = k
            out[#out + 1] = params[i + 1]
        end
    end
    for i = 1, #values do
        out[#out + 1] = key
        out[#out + 1] = values[i]
    end
    r.params = out
    r.header_names = r.header_names or {}
    r.header_names[key] = values[1] and name or nil
    r.header_list, r.vars, r.cookie_header = nil, nil, nil
end

function req.clear_header(name)
    return req.set_header(name, nil)
end

function req.raw_header(no_request_line)
    local r = core.cur or no_request()
    -- Rebuilt from the CGI params: the front server does not forward the
    -- bytes it received, so case and order of names are approximations.
    local lines = {}
    if not no_request_line then
        lines[1] = (get_var(r, "request") or "") .. "\r\n"
    end
    local list = each_request_header(r)
    for i = 1, #list, 2 do
        lines[#lines + 1] = title_case(list[i]) .. ": " .. list[i + 1] .. "\r\n"
    end
    lines[#lines + 1] = "\r\n"
    return concat(lines)
end

