-- The mk.* API of the Monkey web server's Lua plugin (docs/mk-api.md),
-- as a thin layer over the ngx API.
--
-- Loaded once per VM by fcgi_lua/lua/engine.py, after ngx.lua, with the
-- engine's helpers and ngx.lua's extension hooks.  `mk` is a global of
-- every request; what belongs to one request (mk.request, mk.response,
-- mk.config, and anything a script assigns to mk.*) lives per request, so
-- nothing a script does to `mk` reaches another request.
--
-- Fixed on the way from the original plugin: arguments, form fields and
-- cookie values are decoded; set_cookie emits Domain (and Path only once);
-- multipart uploads keep their file name and go to a temp file.

local helpers, ext = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local ipairs = ipairs
local error = error
local rawget = rawget
local rawset = rawset
local setmetatable = setmetatable
local concat = table.concat
local sub = string.sub
local byte = string.byte
local char = string.char
local find = string.find
local gsub = string.gsub
local gmatch = string.gmatch
local match = string.match
local upper = string.upper
local lower = string.lower
local format = string.format
local floor = math.floor
local io_open = io.open
local ngx = ngx
local ngx_var = ngx.var
local ngx_header = ngx.header
local req = ngx.req
local http_time = ngx.http_time
local decode_args = ngx.decode_args

local current = ext.current
local buffer = ext.buffer

local VERSION = helpers.version

local _M = { _VERSION = "0.1" }

-- per request (weak: a finished request's state goes with it)
local states = setmetatable({}, { __mode = "k" })

local function state()
    local r = current()
    if not r then
        error("no request found", 3)
    end
    local st = states[r]
    if not st then
        st = { fields = {} }
        states[r] = st
    end
    return st
end

---------------------------------------------------------------- bodies and args

local function body_data()
    req.read_body()
    local data = req.get_body_data()
    if data then
        return data
    end
    local path = req.get_body_file()
    if not path then
        return ""
    end
    local fh, err = io_open(path, "rb")
    if not fh then
        return nil, err
    end
    data = fh:read("*a")
    fh:close()
    return data
end

-- An ngx-style args table (repeated keys -> array, bare keys -> true) as
-- the plugin's two tables: first value per key, every value per key.
local function two_tables(args, first, all)
    first = first or {}
    all = all or {}
    for k, value in pairs(args) do
        local values = type(value) == "table" and value or { value }
        local list = all[k] or {}
        for _, x in ipairs(values) do
            list[#list + 1] = x == true and "" or x
        end
        all[k] = list
        if first[k] == nil then
            first[k] = list[1]
        end
    end
    return first, all
end

local function parseargs()
    return two_tables((req.get_uri_args(0)))
end

local function parsedata()
    local ctype = lower(ngx_var.content_type or "")
    if find(ctype, "^application/x%-www%-form%-urlencoded") then
        req.read_body()
        local args = req.get_post_args(0)
        if not args then
            -- spooled to a file: OpenResty's get_post_args refuses that
            local data, err = body_data()
            if not data then
                return {}, {}, err
            end
            args = decode_args(data, 0)
        end
        return two_tables(args)
    elseif find(ctype, "^multipart/form%-data") then
        local get_multipart = req.get_multipart
        if not get_multipart then
            return {}, {}, "multipart bodies need ngx.req.get_multipart"
        end
        local res, err = get_multipart()
        if not res then
            return {}, {}, err
        end
        local first, all = two_tables(res.fields or {})
        -- a file field's value is its table: name, filename,
        -- content_type, size, path (the temp file)
        for _, file in ipairs(res.files or {}) do
            local list = all[file.name] or {}
            list[#list + 1] = file
            all[file.name] = list
            if first[file.name] == nil then
                first[file.name] = file
            end
        end
        return first, all
    end
    return {}, {}
end

---------------------------------------------------------------- mk.request

local function request_headers()
    local headers = {}
    for name, value in pairs(req.get_headers(0)) do
        if type(value) == "table" then
            value = concat(value, name == "cookie" and "; " or ", ")
        end
        headers["HTTP_" .. upper((gsub(name, "-", "_")))] = value
    end
    return headers
end

local request_mt = {
    -- the body is read only when a script asks for it
    __index = function(t, key)
        if key == "data" then
            local data = body_data() or ""
            t.data = data
            return data
        end
        return nil
    end,
}

local function new_request()
    local v = ngx_var
    local query = v.args or ""
    local uri = v.request_uri or v.uri or ""
    if query ~= "" and not find(uri, "?", 1, true) then
        uri = uri .. "?" .. query
    end
    return setmetatable({
        server_software = v.server_software or ("fcgi-lua/" .. VERSION),
        document_root = v.document_root,
        server_protocol = v.server_protocol,
        server_name = v.server_name,
        server_addr = v.server_addr,
        server_port = tonumber(v.server_port),
        script_filename = v.script_filename,
        script_name = v.script_name,
        request_method = v.request_method,
        remote_addr = v.remote_addr,
        remote_port = tonumber(v.remote_port),
        request_uri = uri,
        query_string = query,
        headers = request_headers(),
        parseargs = parseargs,
        parsedata = parsedata,
    }, request_mt)
end

---------------------------------------------------------------- mk.response

-- Writes go straight to ngx.status / ngx.header; mk.print does not send
-- the headers, so they may change until the response is flushed.
local response_headers = setmetatable({}, {
    __index = function(_, name) return ngx_header[name] end,
    __newindex = function(_, name, value) ngx_header[name] = value end,
})

local response_mt = {
    __index = function(_, key)
        if key == "status" then
            local status = ngx.status
            return (status and status ~= 0) and status or 200
        elseif key == "headers" then
            return response_headers
        end
        return nil
    end,
    __newindex = function(t, key, value)
        if key == "status" then
            ngx.status = value
        elseif key == "headers" then
            if type(value) ~= "table" then
                error("mk.response.headers must be a table", 2)
            end
            for name, v in pairs(value) do
                ngx_header[name] = v
            end
        else
            rawset(t, key, value)
        end
    end,
}

---------------------------------------------------------------- mk.config

local function new_config()
    return {
        server_software = "fcgi-lua/" .. VERSION,
        version = VERSION,
        transport = "fastcgi",
        workers = helpers.worker_count,
        worker_id = helpers.worker_id,
        pid = helpers.pid,
        document_root = helpers.root ~= "" and helpers.root or nil,
        lua_runtime = helpers.runtime,
        lua_version = rawget(_G, "jit") and jit.version or _VERSION,
        debug = helpers.debug,
    }
end

---------------------------------------------------------------- mk.print

-- The plugin's rule: the calls' strings joined with "\n" (no newline
-- after the last one).
function _M.print(s)
    local t = type(s)
    if t == "number" then
        s = tostring(s)
    elseif t ~= "string" then
        error("bad argument #1 to 'print' (string expected, got " .. t .. ")", 2)
    end
    local st = state()
    local r = current()
    if st.printed then
        buffer(r, "\n")
    end
    st.printed = true
    buffer(r, s)
end

---------------------------------------------------------------- mk.cookies

local function hex_char(h)
    return char(tonumber(h, 16))
end

-- RFC 6265 cookie-octet, minus "%" (the escape itself)
local COOKIE_ESCAPES = {}
for i = 0, 255 do
    local ok = i == 0x21 or (i >= 0x23 and i <= 0x2B and i ~= 0x25)
               or (i >= 0x2D and i <= 0x3A) or (i >= 0x3C and i <= 0x5B)
               or (i >= 0x5D and i <= 0x7E)
    if not ok then
        COOKIE_ESCAPES[char(i)] = format("%%%02X", i)
    end
end

local function escape_cookie(value)
    return (gsub(value, "[^!#$&'()*+%-./0-9:<=>?@A-Z%[%]^_`a-z{|}~]", COOKIE_ESCAPES))
end
_M.escape_cookie = escape_cookie

local function unescape_cookie(value)
    return (gsub(value, "%%(%x%x)", hex_char))
end

local cookies = {}

-- Every cookie the client sent, name -> decoded value (the first wins).
function cookies.get_cookies()
    local res = {}
    local header = ngx_var.http_cookie
    if not header then
        return res
    end
    for pair in gmatch(header, "[^;]+") do
        local name, value = match(pair, "^%s*([^=]-)%s*=%s*(.-)%s*$")
        if name and name ~= "" and res[name] == nil then
            res[name] = unescape_cookie(value)
        end
    end
    return res
end

local function check_token(what, s)
    if type(s) ~= "string" or s == "" or find(s, "[%c%s\"(),/:;<=>?@%[\\%]{}\127-\255]") then
        error("bad cookie " .. what .. ": " .. tostring(s), 3)
    end
end

local function attr_value(what, v)
    v = tostring(v)
    if find(v, "[%c;]") then
        error("bad cookie " .. what .. ": " .. v, 3)
    end
    return v
end

-- { name=, value=, expires= (or expiry=; seconds since the epoch, or a
-- date string), max_age=, path= (default "/"), domain=, secure=,
-- httponly=, samesite= } -> one Set-Cookie header, added to the others.
function cookies.set_cookie(c)
    if type(c) ~= "table" then
        error("bad argument #1 to 'set_cookie' (table expected, got " .. type(c) .. ")", 2)
    end
    check_token("name", c.name)
    local value = c.value
    if value == nil then
        value = ""
    end
    local parts = { c.name .. "=" .. escape_cookie(tostring(value)) }
    local expires = c.expires
    if expires == nil then
        expires = c.expiry
    end
    if expires ~= nil and expires ~= false then
        if type(expires) == "number" then
            parts[#parts + 1] = "Expires=" .. http_time(expires)
        else
            parts[#parts + 1] = "Expires=" .. attr_value("expires", expires)
        end
    end
    local max_age = c.max_age or c["max-age"]
    if max_age ~= nil then
        local n = tonumber(max_age)
        if not n then
            error("bad cookie max_age: " .. tostring(max_age), 2)
        end
        parts[#parts + 1] = "Max-Age=" .. format("%d", floor(n))
    end
    if c.domain then
        parts[#parts + 1] = "Domain=" .. attr_value("domain", c.domain)
    end
    parts[#parts + 1] = "Path=" .. attr_value("path", c.path or "/")
    if c.secure then
        parts[#parts + 1] = "Secure"
    end
    if c.httponly then
        parts[#parts + 1] = "HttpOnly"
    end
    if c.samesite then
        parts[#parts + 1] = "SameSite=" .. attr_value("samesite", c.samesite)
    end
    if ngx.headers_sent then
        return nil, "response headers already sent"
    end
    local line = concat(parts, "; ")
    local old = ngx_header["Set-Cookie"]
    if old == nil then
        ngx_header["Set-Cookie"] = line
    elseif type(old) == "table" then
        old[#old + 1] = line
        ngx_header["Set-Cookie"] = old
    else
        ngx_header["Set-Cookie"] = { old, line }
    end
    return true
end

_M.cookies = cookies
_M.cookie = cookies -- the spelling of the plugin author's blog

---------------------------------------------------------------- the mk table

local per_request = {
    request = new_request,
    response = function() return setmetatable({}, response_mt) end,
    config = new_config,
}

local mk = setmetatable({}, {
    __index = function(_, key)
        local fields = state().fields
        local v = fields[key]
        if v == nil then
            local make = per_request[key]
            if make then
                v = make()
                fields[key] = v
            else
                v = rawget(_M, key)
            end
        end
        return v
    end,
    -- a script's own mk.* fields stay in its request
    __newindex = function(_, key, value)
        local fields = state().fields
        if value == nil and rawget(_M, key) ~= nil then
            value = false
        end
        fields[key] = value
    end,
})

_G.mk = mk
package.loaded.mk = mk

return _M
