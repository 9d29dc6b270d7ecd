-- resty.core, the platform layer of OpenResty, provided natively: every
-- module lua-resty-core ships (resty.core, resty.core.*, and the ngx.*
-- modules: ngx.base64, ngx.errlog, ngx.process, ngx.resp, ngx.req, ...)
-- resolves to the one here, returning what lua-resty-core's returns where
-- libraries use it (resty.core.base's new_tab, clear_tab, get_string_buf,
-- FFI_OK ...).  The ngx.* API those modules install in OpenResty is in
-- ngx.lua and its sibling files already, so most of them only return
-- their version.
--
-- Why: Debian's lua-resty-core (/usr/share/lua/5.1/resty/core/*.lua, on
-- package.path) is nginx-bound: it calls lua-nginx-module's C functions
-- through the FFI (`undefined symbol: ngx_http_lua_ffi_shdict_flush_all`).
-- Every name here is a package.preload entry, which `require` tries
-- before any file on package.path, so that copy is never loaded.
-- Standalone libraries (resty.lrucache, resty.lock, resty.string, ...)
-- are not shadowed: only the modules lua-resty-core itself ships are.
--
-- Loaded once per VM by fcgi_lua/lua/engine.py, after the ngx.* layers
-- (ngx.re and ngx.semaphore are theirs: re.lua, thread.lua).

local helpers, extensions = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local error = error
local pcall = pcall
local pairs = pairs
local getmetatable = getmetatable
local ngx = ngx
local setmetatable = setmetatable
local floor = math.floor
local ceil = math.ceil
local byte = string.byte
local char = string.char
local find = string.find
local gsub = string.gsub
local match = string.match

local py_log = extensions.log
local py_monotonic = helpers.monotonic
local py_log_level = helpers.log_level
local py_graceful_exit = helpers.graceful_exit
local master_pid = helpers.master_pid
local current_context = extensions.context

-- lua-resty-core's release for lua-nginx-module 0.10.23 (ngx.config's
-- ngx_lua_version), the API level ngx.lua mirrors.
local VERSION = "0.1.25"

local preload = package.preload
local modules = {}

local function version_only()
    return { version = VERSION }
end

---------------------------------------------------------------- resty.core.base

local ok, new_tab = pcall(require, "table.new")
if not ok then
    new_tab = function() return {} end
end
local clear_tab
ok, clear_tab = pcall(require, "table.clear")
if not ok then
    clear_tab = function(t)
        for k in pairs(t) do
            t[k] = nil
        end
    end
end

-- The C types lua-resty-core's base declares, which FFI code written
-- against it (cdefs naming ngx_str_t) expects; LuaJIT only.
local function declare_types(ffi)
    if not pcall(ffi.typeof, "ngx_str_t") then
        ffi.cdef [[
            typedef struct {
                size_t                 len;
                const unsigned char   *data;
            } ngx_str_t;
        ]]
    end
    if not pcall(ffi.typeof, "ngx_http_request_t") then
        ffi.cdef [[ typedef struct ngx_http_request_s  ngx_http_request_t; ]]
    end
    if not pcall(ffi.typeof, "ngx_http_lua_ffi_str_t") then
        ffi.cdef [[
            typedef struct {
                int                       len;
                const unsigned char      *data;
            } ngx_http_lua_ffi_str_t;
        ]]
    end
end

-- What get_request() returns: a handle standing for the request (or
-- timer) running now, never the request's internals.  nil outside one
-- (init_script, init_worker_script), as OpenResty's is in the init phase.
local handles = setmetatable({}, { __mode = "k" })
local handle_mt = { __tostring = function() return "ngx_http_request_t" end }

local function get_request()
    local ctx = current_context()
    if not ctx then
        return nil
    end
    local h = handles[ctx]
    if not h then
        h = setmetatable({}, handle_mt)
        handles[ctx] = h
    end
    return h
end

local base = {
    version = VERSION,
    new_tab = new_tab,
    clear_tab = clear_tab,
    get_request = get_request,
    FFI_OK = 0,
    FFI_NO_REQ_CTX = -100,
    FFI_BAD_CONTEXT = -101,
    FFI_ERROR = -1,
    FFI_AGAIN = -2,
    FFI_BUSY = -3,
    FFI_DONE = -4,
    FFI_DECLINED = -5,
    FFI_ABORT = -6,
}

-- The FFI buffers are made on first use: on the PUC runtimes require
-- "ffi" is compat.lua's, which has char buffers only.
local ffi
local str_buf_size = 4096
local str_buf, size_ptr, errmsg

local function get_ffi()
    if not ffi then
        ffi = require "ffi"
        if jit then
            declare_types(ffi)
        end
    end
    return ffi
end

function base.get_errmsg_ptr()
    if not errmsg then
        errmsg = get_ffi().new("char *[1]")
    end
    return errmsg
end

function base.set_string_buf_size(size)
    if size <= 0 then
        return
    end
    str_buf = nil
    str_buf_size = ceil(size)
end

function base.get_string_buf_size()
    return str_buf_size
end

function base.get_size_ptr()
    if not size_ptr then
        size_ptr = get_ffi().new("size_t[1]")
    end
    return size_ptr
end

function base.get_string_buf(size, must_alloc)
    local f = get_ffi()
    local c_buf_type = base.c_buf_type or "char[?]"
    if size > str_buf_size or must_alloc then
        return f.new(c_buf_type, size)
    end
    if not str_buf then
        str_buf = f.new(c_buf_type, str_buf_size)
    end
    return str_buf
end

local FREE_LIST_REF = 0

function base.ref_in_table(tb, key)
    if key == nil then
        return -1
    end
    local ref = tb[FREE_LIST_REF]
    if ref and ref ~= 0 then
        tb[FREE_LIST_REF] = tb[ref]
    else
        ref = #tb + 1
    end
    tb[ref] = key
    return ref
end

function base.allows_subsystem(...)
    for i = 1, select("#", ...) do
        if select(i, ...) == "http" then
            return
        end
    end
    error("unsupported subsystem: http", 2)
end

function modules.base()
    if jit then -- the real FFI: base's C types, and c_buf_type as a ctype
        base.c_buf_type = get_ffi().typeof("char[?]")
    end
    return base
end

---------------------------------------------------------------- resty.core.*

-- The ngx.* API these install in OpenResty is ngx.lua's (and re.lua's,
-- shdict.lua's, thread.lua's): they return what lua-resty-core's return.
for _, name in pairs({
    "base64", "coroutine", "exit", "hash", "ndk", "param", "phase", "request",
    "shdict", "socket", "uri", "var",
}) do
    modules[name] = version_only
end

function modules.worker()
    return { _VERSION = VERSION }
end

-- lua-resty-core's time: ngx_current_msec, nginx's monotonic clock in ms.
local function monotonic_msec()
    return floor(py_monotonic() * 1000)
end

function modules.time()
    return {
        version = VERSION,
        monotonic_msec = monotonic_msec,
        monotonic_time = function() return monotonic_msec() / 1000 end,
    }
end

function modules.regex()
    return {
        version = VERSION,
        -- the growth ratio of lua-resty-core's PCRE output buffer: there
        -- is none here (regex.py), only the argument check remains
        set_buf_grow_ratio = function(ratio)
            if type(ratio) ~= "number" or ratio <= 1 then
                error("bad \"ratio\" argument: must be greater than 1", 2)
            end
        end,
    }
end

-- ngx.ctx as lua-resty-core's get_ctx_table(ctx): the request's ctx,
-- which `ctx` becomes when given.
local function get_ctx_table(ctx)
    if ctx ~= nil then
        ngx.ctx = ctx
        return ctx
    end
    return ngx.ctx
end

function modules.ctx()
    return { _VERSION = VERSION, get_ctx_table = get_ctx_table }
end

-- lua-resty-core's misc: getters and setters of ngx's "magic keys"
-- (ngx.status, ngx.ctx, ...).  ngx/misc.lua's metatable serves those; a
-- registered one is consulted first, once anything is registered.
local magic_getters, magic_setters

local function hook_ngx()
    if magic_getters then
        return
    end
    magic_getters, magic_setters = {}, {}
    local mt = getmetatable(ngx)
    local index, newindex = mt.__index, mt.__newindex
    mt.__index = function(t, key)
        local get = magic_getters[key]
        if get then
            return get()
        end
        return index(t, key)
    end
    mt.__newindex = function(t, key, value)
        local set = magic_setters[key]
        if set then
            return set(value)
        end
        return newindex(t, key, value)
    end
end

function modules.misc()
    return {
        _VERSION = VERSION,
        register_ngx_magic_key_getter = function(key, fn)
            hook_ngx()
            magic_getters[key] = fn
        end,
        register_ngx_magic_key_setter = function(key, fn)
            hook_ngx()
            magic_setters[key] = fn
        end,
    }
end

-- lua-resty-core's set_resp_header(tb, key, value, no_override): what
-- ngx.header[key] = value does, or an added value (no_override).
local function set_resp_header(tb, key, value, no_override)
    if type(key) ~= "string" then
        key = tostring(key)
    end
    if not no_override then
        ngx.header[key] = value
        return
    end
    if value == nil then
        error("invalid header value", 3)
    end
    local values = {}
    local old = ngx.header[key]
    if type(old) == "table" then
        for i = 1, #old do
            values[i] = old[i]
        end
    elseif old ~= nil then
        values[1] = old
    end
    if type(value) == "table" then
        if #value == 0 then
            return
        end
        for i = 1, #value do
            values[#values + 1] = value[i]
        end
    else
        values[#values + 1] = value
    end
    ngx.header[key] = values
end

-- nginx's If-Modified-Since / If-Match checks are the front server's.
local function bypass_if_checks() end

function modules.response()
    return {
        version = VERSION,
        set_resp_header = set_resp_header,
        bypass_if_checks = bypass_if_checks,
    }
end

-- lua-resty-core's utils.str_replace_char: every `find` byte becomes
-- `replace` (the first byte of each).
function modules.utils()
    return {
        version = VERSION,
        str_replace_char = function(str, find_char, replace_char)
            local f = char(byte(find_char))
            if not find(str, f, 1, true) then
                return str
            end
            local r = char(byte(replace_char))
            return (gsub(str, "%" .. f, (gsub(r, "%%", "%%%%"))))
        end,
    }
end

-- require "resty.core": every submodule, as lua-resty-core's core.lua.
local function core()
    for _, name in pairs({
        "var", "worker", "regex", "shdict", "time", "hash", "uri", "exit", "base64",
        "request", "response", "phase", "ndk", "socket", "coroutine", "param", "misc",
        "ctx",
    }) do
        require("resty.core." .. name)
    end
    return { version = VERSION }
end

preload["resty.core"] = core
for name, loader in pairs(modules) do
    preload["resty.core." .. name] = loader
end

---------------------------------------------------------------- ngx.* modules

local ngx_modules = {}

-- ngx.base64: nginx's base64url (RFC 4648 section 5, no padding).
local URL_TO_STD = { ["-"] = "+", ["_"] = "/" }
local STD_TO_URL = { ["+"] = "-", ["/"] = "_" }

local function encode_base64url(s)
    if type(s) ~= "string" then
        return nil, "must provide a string"
    end
    return (gsub(ngx.encode_base64(s, true), "[+/]", STD_TO_URL))
end

-- ngx_decode_base64url: the input ends at its first "=" (what follows is
-- ignored, as nginx does); before it, only the URL alphabet.
local function decode_base64url(s)
    if type(s) ~= "string" then
        return nil, "must provide a string"
    end
    local head = match(s, "^[^=]*")
    if find(head, "[^A-Za-z0-9_%-]") or #head % 4 == 1 then
        return nil, "invalid input"
    end
    local decoded = ngx.decode_base64((gsub(head, "[-_]", URL_TO_STD)))
    if decoded == nil then
        return nil, "invalid input"
    end
    return decoded
end

function ngx_modules.base64()
    return {
        version = VERSION,
        encode_base64url = encode_base64url,
        decode_base64url = decode_base64url,
    }
end

-- ngx.errlog: raw_log and the filter level are there; capturing the log
-- (lua_capture_error_log) is not: nginx's error log is the front
-- server's, fcgi-lua's log is Python's.
local function raw_log(level, msg)
    if type(level) ~= "number" then
        error("bad argument #1 to 'raw_log' (must be a number)", 2)
    end
    if type(msg) ~= "string" then
        error("bad argument #2 to 'raw_log' (must be a string)", 2)
    end
    if level < 0 or level > 8 or level ~= floor(level) then
        error("bad log level", 2)
    end
    py_log(level, msg)
end

local NO_CAPTURE = "directive \"lua_capture_error_log\" is not set"

function ngx_modules.errlog()
    return {
        version = VERSION,
        raw_log = raw_log,
        get_sys_filter_level = function() return py_log_level() end,
        set_filter_level = function(level)
            if not level then
                return nil, [[missing "level" argument]]
            end
            return nil, NO_CAPTURE
        end,
        get_logs = function() return nil, NO_CAPTURE end,
    }
end

-- ngx.process: every fcgi-lua VM is a worker's (init_script too runs in
-- each worker); the master is fcgi-lua's, which has no Lua.
function ngx_modules.process()
    return {
        version = VERSION,
        type = function() return "worker" end,
        enable_privileged_agent = function()
            return nil, "API disabled in the current context"
        end,
        signal_graceful_exit = function() py_graceful_exit() end,
        get_master_pid = function() return master_pid end,
    }
end

function ngx_modules.resp()
    return {
        version = VERSION,
        add_header = function(key, value)
            set_resp_header(nil, key, value, true)
        end,
        bypass_if_checks = bypass_if_checks,
    }
end

-- ngx.req.add_header: another value for a request header, as
-- ngx.req.set_header with the old values and the new one.
function ngx_modules.req()
    return {
        version = VERSION,
        add_header = function(key, value)
            local set_header = ngx.req.set_header
            if not set_header then
                error("ngx.req.add_header is not available in fcgi-lua", 2)
            end
            if type(key) ~= "string" then
                key = tostring(key)
            end
            local values = {}
            local old = ngx.req.get_headers()[key]
            if type(old) == "table" then
                for i = 1, #old do
                    values[i] = old[i]
                end
            elseif old ~= nil then
                values[1] = old
            end
            if type(value) == "table" then
                for i = 1, #value do
                    values[#values + 1] = value[i]
                end
            else
                values[#values + 1] = value
            end
            set_header(key, values)
        end,
    }
end

-- What needs the parts of nginx a FastCGI responder has not: TLS (the
-- front server terminates it), the upstream balancer phase, OCSP
-- stapling; ngx.pipe (nginx's process spawner) is not provided.  A
-- require fails at once, naming why, so a library that probes with
-- pcall(require, ...) takes its other path.
local UNAVAILABLE = {
    ["ngx.ssl"] = "TLS ends at the front server",
    ["ngx.ssl.session"] = "TLS ends at the front server",
    ["ngx.ssl.clienthello"] = "TLS ends at the front server",
    ["ngx.ssl.proxysslcert"] = "TLS ends at the front server",
    ["ngx.ssl.proxysslverify"] = "TLS ends at the front server",
    ["ngx.proxyssl"] = "TLS ends at the front server",
    ["ngx.ocsp"] = "TLS ends at the front server",
    ["ngx.balancer"] = "there is no balancer_by_lua phase over FastCGI",
    ["ngx.pipe"] = "nginx's process spawner is not part of it",
}

for name, why in pairs(UNAVAILABLE) do
    preload[name] = function()
        error("module '" .. name .. "' is not available in fcgi-lua: " .. why, 2)
    end
end

for name, loader in pairs(ngx_modules) do
    preload["ngx." .. name] = loader
end

-- lua-nginx-module registers the ngx table itself as a module
-- (loaded, not preloaded: isolation.lua turns it into the view a request
-- sees as its ngx)
package.loaded.ngx = ngx

-- ... and loads resty.core into every VM before any request
local loaded_core, core_module = pcall(core)
if loaded_core then
    package.loaded["resty.core"] = core_module
end

return { base = base }
