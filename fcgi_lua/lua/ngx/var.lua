-- ngx.var: nginx variables computed from the request's FastCGI params
-- (ngx_http_lua_variable.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local error = error
local setmetatable = setmetatable
local concat = table.concat
local sub = string.sub
local gsub = string.gsub
local find = string.find
local lower = string.lower
local format = string.format
local match = string.match
local gmatch = string.gmatch
local py_params = helpers.params
local py_var = helpers.var

local header_key = core.header_key -- headers.lua
local hex_char = core.hex_char -- string.lua
local no_request = core.no_request
local num2str = core.num2str -- log.lua
local worker_pid = core.helpers.pid -- ngx.worker.pid()

-- The request's FastCGI params, { name, value, name, value, ... }: asked
-- of Python (one crossing) the first time the request needs them, so a
-- script that reads no variable and no header never pays for them.
local function params_of(r)
    local params = r.params
    if not params then
        params = { py_params(r.handle) }
        r.params = params
    end
    return params
end

-- The request's variables by lower-case name (the first param of each).
-- While the script has not needed all the params (a header table, a
-- changed header), each name is asked of Python when first read (one
-- crossing, the usual script reads a few); afterwards they come from
-- the params Lua holds, which set_header may have changed.
local function request_vars(r)
    local vars = r.vars
    if vars then
        return vars
    end
    local params = r.params
    if params then
        vars = {}
        for i = 1, #params, 2 do
            local k = lower(params[i])
            if vars[k] == nil then
                vars[k] = params[i + 1]
            end
        end
    else
        local handle, missing = r.handle, {}
        vars = setmetatable({}, {
            __index = function(t, name)
                if missing[name] or type(name) ~= "string" then
                    return nil
                end
                local v = py_var(handle, name)
                if v == nil then
                    missing[name] = true
                else
                    t[name] = v
                end
                return v
            end,
        })
    end
    r.vars = vars
    return vars
end

local function first_arg(args, name)
    -- nginx's $arg_NAME: the raw (still escaped) value of the first match
    for piece in gmatch(args, "[^&]+") do
        local k, v = match(piece, "^([^=]*)=(.*)$")
        if k and lower(k) == name then
            return v
        end
    end
    return nil
end

local function cookie_value(cookies, name)
    for pair in gmatch(cookies, "[^;]+") do
        local k, v = match(pair, "^%s*([^=]-)%s*=%s*(.-)%s*$")
        if k == name then
            return v
        end
    end
    return nil
end

-- nginx variables that are not plain CGI params, computed from them.
local DERIVED = {
    -- nginx's $uri is decoded; lighttpd and Apache send no DOCUMENT_URI,
    -- only the raw REQUEST_URI (docs/fronts.md).
    uri = function(v)
        return v.document_uri or (gsub(match(v.request_uri or "", "^[^?]*"), "%%(%x%x)", hex_char))
    end,
    -- nginx's $args is "not found" (nil) without a "?", "" after a bare "?".
    args = function(v)
        local q = v.query_string
        if q == "" and not find(v.request_uri or "", "?", 1, true) then
            return nil
        end
        return q
    end,
    is_args = function(v) return (v.query_string or "") ~= "" and "?" or "" end,
    host = function(v)
        local h = v.http_host
        if h then
            return lower(match(h, "^([^:]*)"))
        end
        return v.server_name
    end,
    scheme = function(v)
        return v.request_scheme or (v.https == "on" and "https" or "http")
    end,
    request = function(v)
        if v.request_method then
            return v.request_method .. " " .. (v.request_uri or "") .. " "
                   .. (v.server_protocol or "")
        end
    end,
    -- Apache's "proxy:fcgi://HOST/path" (fcgi_lua/scripts.py) as the path
    request_filename = function(v)
        local f = v.script_filename
        return f and (match(f, "^proxy:fcgi://[^/]*(/.*)$")
                      or match(f, "^proxy:balancer://[^/]*(/.*)$") or f)
    end,
    content_type = function(v) return v.content_type or v.http_content_type end,
    -- the process that runs the script, as nginx's $pid is its worker's
    pid = function() return format("%d", worker_pid) end,
    content_length = function(v) return v.content_length or v.http_content_length end,
}

local NOT_CHANGEABLE = {
    request_uri = true, request_method = true, remote_addr = true, remote_port = true,
    server_addr = true, server_port = true, server_protocol = true, server_name = true,
    document_uri = true, uri = true, host = true, scheme = true, request = true,
    request_filename = true, https = true, is_args = true, query_string = true,
}

-- Every Cookie header of the request, joined with "; " the way nginx's
-- $http_cookie joins them (nginx 1.22 sends one HTTP_COOKIE param per
-- header line over FastCGI).
local function cookie_header(r)
    local cookies = r.cookie_header
    if cookies == nil then
        local parts = {}
        local params = params_of(r)
        for i = 1, #params, 2 do
            if params[i] == "HTTP_COOKIE" then
                parts[#parts + 1] = params[i + 1]
            end
        end
        cookies = concat(parts, "; ")
        r.cookie_header = cookies
    end
    return cookies
end

local function get_var(r, name)
    if name == "request_body" then
        -- nginx's $request_body: the body once read into memory ("" for
        -- an empty one init_body started: nginx has its buffer then)
        local body = r.body
        if r.body_state ~= "memory" or (body == "" and not r.new_body) then
            return nil
        end
        return body
    end
    if name == "http_cookie" then
        local cookies = cookie_header(r)
        return cookies ~= "" and cookies or nil
    end
    local override = r.var_set
    if override then
        local v = override[name]
        if v ~= nil then
            return v or nil
        end
    end
    local vars = request_vars(r)
    if name == "query_string" then
        name = "args"
    end
    local v = vars[name]
    if v ~= nil then
        return v
    end
    local derive = DERIVED[name]
    if derive then
        return derive(vars)
    end
    local prefix, rest = match(name, "^(%a+)_(.+)$")
    if prefix == "arg" then
        local args = get_var(r, "args")
        return args and first_arg(args, rest)
    elseif prefix == "cookie" then
        return cookie_value(cookie_header(r), rest)
    elseif prefix == "sent" and sub(rest, 1, 5) == "http_" then
        -- $sent_http_NAME: the response header as set so far
        local h = r.hvals[header_key(sub(rest, 6))]
        return h and h[1] and concat(h, ", ") or nil
    end
    return nil
end

local var_mt = {
    __index = function(_, name)
        local r = core.cur or no_request()
        if type(name) ~= "string" then
            if type(name) == "number" then
                return nil -- regex captures ($1...) do not exist here
            end
            error("bad variable name", 2)
        end
        return get_var(r, lower(name))
    end,
    __newindex = function(_, name, value)
        local r = core.cur or no_request()
        if type(name) ~= "string" then
            error("bad variable name", 2)
        end
        name = lower(name)
        if NOT_CHANGEABLE[name] or match(name, "^arg_") or match(name, "^http_")
                or match(name, "^cookie_") then
            error('variable "' .. name .. '" not changeable', 2)
        end
        local known = name == "args" or name == "query_string" or name == "limit_rate"
                      or request_vars(r)[name] ~= nil or (r.var_set and r.var_set[name] ~= nil)
        if not known then
            error('variable "' .. name .. '" not found for writing; maybe it is a built-in '
                  .. 'variable that is not changeable or you forgot to use "set $' .. name
                  .. " '';\" in the config file to define it first", 2)
        end
        if value == nil then
            value = false
        elseif type(value) == "number" then
            value = num2str(value)
        elseif type(value) ~= "string" then
            error("bad variable value", 2)
        end
        r.var_set = r.var_set or {}
        if name == "args" or name == "query_string" then
            r.var_set.args = value
            r.var_set.query_string = value
            r.var_set.is_args = (value or "") ~= "" and "?" or ""
        else
            r.var_set[name] = value
        end
    end,
}
ngx.var = setmetatable({}, var_mt)

core.params_of = params_of
core.get_var = get_var
