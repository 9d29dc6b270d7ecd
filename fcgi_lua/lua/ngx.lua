-- The ngx.* API of fcgi-lua, and the driver that runs one request.
--
-- Loaded once per VM by fcgi_lua/lua/engine.py, which passes the table of
-- Python helpers (I/O-free: hashing, logging, error pages) and gets back
-- the driver table { compile, start, drive, abort, run_phase }.
--
-- One coroutine per request.  The coroutine yields only for I/O, always as
-- `IO, command, argument`; the driver hands (command, argument) to Python,
-- which awaits the operation and resumes with the result.  The API finds
-- its request through `cur`, set by the driver before every resume (one
-- worker is one thread, so this is exact, also inside user coroutines).
--
-- Semantics follow lua-nginx-module 0.10.23 (content phase), checked
-- against OpenResty; deliberate differences are listed in docs/lua-api.md.

local helpers = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local ipairs = ipairs
local next = next
local select = select
local error = error
local rawget = rawget
local rawset = rawset
local setmetatable = setmetatable
local getmetatable = getmetatable
local concat = table.concat
local sort = table.sort
local byte = string.byte
local char = string.char
local sub = string.sub
local gsub = string.gsub
local find = string.find
local lower = string.lower
local upper = string.upper
local format = string.format
local match = string.match
local gmatch = string.gmatch
local floor = math.floor
local huge = math.huge
local os_date = os.date
local co_create = coroutine.create
local co_resume = coroutine.resume
local co_yield = coroutine.yield
local co_status = coroutine.status
local co_running = coroutine.running
local co_close = coroutine.close -- 5.4+: frees a dead coroutine's stack
local collectgarbage = collectgarbage -- the sandbox limits the global one
local traceback = debug.traceback
local getinfo = debug.getinfo
local setfenv = setfenv -- nil on Lua 5.2+
local loadstring = loadstring or load
local unpack = unpack or table.unpack
local collectgarbage = collectgarbage

local py_log = helpers.log
local py_error_page = helpers.error_page
local py_update_time = helpers.update_time
local py_params = helpers.params
local py_body_now = helpers.body_now
local reasons = helpers.reasons
local DEFAULT_TYPE = helpers.default_type
-- ngx.null is the NULL light userdata, as in OpenResty: the same value as
-- cjson.null, so cjson.encode({a = ngx.null}) gives {"a":null}.  LuaJIT
-- 2.1's string.buffer decodes one from its serialisation tag 0x03 (no C
-- module needed); other runtimes cannot make one from Lua and get a unique
-- userdata from Python instead (docs/lua-api.md).
local NULL = helpers.null
if jit then
    local ok, buffer = pcall(require, "string.buffer")
    if ok then
        NULL = buffer.decode("\3")
    end
end

-- Every yield meant for the driver starts with this marker, so that a
-- user coroutine's own yields are told apart from I/O.
local IO = {}

local cur -- the request running now (nil while a timer runs)
-- The context running now: a request (then cur_ctx == cur) or a timer
-- (thread.lua); sleeps, cosockets and light threads need only a context.
local cur_ctx
local now_cache = 0 -- seconds, float; set by the driver on every resume
-- "init" or "init_worker" while config's init_script or init_worker_script
-- runs (run_phase below), outside any context; nil otherwise.
local phase

local ngx = {}
_G.ngx = ngx

local function no_request()
    if phase == "init_worker" then -- OpenResty's fake request of that phase
        error("API disabled in the context of init_worker_by_lua*", 3)
    end
    if cur_ctx then -- a timer: there is no request behind it
        error("API disabled in the context of ngx.timer", 3)
    end
    error("no request found", 3)
end

---------------------------------------------------------------- constants

ngx.OK = 0
ngx.ERROR = -1
ngx.AGAIN = -2
ngx.DONE = -4
ngx.DECLINED = -5

ngx.STDERR = 0
ngx.EMERG = 1
ngx.ALERT = 2
ngx.CRIT = 3
ngx.ERR = 4
ngx.WARN = 5
ngx.NOTICE = 6
ngx.INFO = 7
ngx.DEBUG = 8

ngx.HTTP_GET = 2
ngx.HTTP_HEAD = 4
ngx.HTTP_POST = 8
ngx.HTTP_PUT = 16
ngx.HTTP_DELETE = 32
ngx.HTTP_MKCOL = 64
ngx.HTTP_COPY = 128
ngx.HTTP_MOVE = 256
ngx.HTTP_OPTIONS = 512
ngx.HTTP_PROPFIND = 1024
ngx.HTTP_PROPPATCH = 2048
ngx.HTTP_LOCK = 4096
ngx.HTTP_UNLOCK = 8192
ngx.HTTP_PATCH = 16384
ngx.HTTP_TRACE = 32768

ngx.HTTP_CONTINUE = 100
ngx.HTTP_SWITCHING_PROTOCOLS = 101
ngx.HTTP_OK = 200
ngx.HTTP_CREATED = 201
ngx.HTTP_ACCEPTED = 202
ngx.HTTP_NO_CONTENT = 204
ngx.HTTP_PARTIAL_CONTENT = 206
ngx.HTTP_SPECIAL_RESPONSE = 300
ngx.HTTP_MOVED_PERMANENTLY = 301
ngx.HTTP_MOVED_TEMPORARILY = 302
ngx.HTTP_SEE_OTHER = 303
ngx.HTTP_NOT_MODIFIED = 304
ngx.HTTP_TEMPORARY_REDIRECT = 307
ngx.HTTP_PERMANENT_REDIRECT = 308
ngx.HTTP_BAD_REQUEST = 400
ngx.HTTP_UNAUTHORIZED = 401
ngx.HTTP_PAYMENT_REQUIRED = 402
ngx.HTTP_FORBIDDEN = 403
ngx.HTTP_NOT_FOUND = 404
ngx.HTTP_NOT_ALLOWED = 405
ngx.HTTP_NOT_ACCEPTABLE = 406
ngx.HTTP_REQUEST_TIMEOUT = 408
ngx.HTTP_CONFLICT = 409
ngx.HTTP_GONE = 410
ngx.HTTP_UPGRADE_REQUIRED = 426
ngx.HTTP_TOO_MANY_REQUESTS = 429
ngx.HTTP_CLOSE = 444
ngx.HTTP_ILLEGAL = 451
ngx.HTTP_INTERNAL_SERVER_ERROR = 500
ngx.HTTP_METHOD_NOT_IMPLEMENTED = 501
ngx.HTTP_NOT_IMPLEMENTED = 501
ngx.HTTP_BAD_GATEWAY = 502
ngx.HTTP_SERVICE_UNAVAILABLE = 503
ngx.HTTP_GATEWAY_TIMEOUT = 504
ngx.HTTP_VERSION_NOT_SUPPORTED = 505
ngx.HTTP_INSUFFICIENT_STORAGE = 507

ngx.null = NULL -- see NULL above

ngx.config = {
    subsystem = "http",
    ngx_lua_version = 10023, -- the lua-nginx-module API level mirrored
    nginx_version = 1022001,
    debug = helpers.debug,
    prefix = function() return helpers.prefix end, -- the directory fcgi-lua started in
    nginx_configure = function() return "" end,
}

local worker_pid = helpers.pid
local worker_id = helpers.worker_id
local worker_count = helpers.worker_count
ngx.worker = {
    pid = function() return worker_pid end,
    id = function() return worker_id end,
    count = function() return worker_count end,
    pids = function() return helpers.worker_pids() end,
    exiting = function() return false end,
}

---------------------------------------------------------------- logging

local log_level_names = {
    [0] = "stderr", "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug",
}

-- What nginx writes for a log call: "[lua] file.lua:12: fn(): message".
local function log_prefix(level)
    local info = getinfo(level, "Sln")
    if not info then
        return "[lua] "
    end
    local src = match(info.short_src, "([^/]*)$") or info.short_src
    if info.namewhat ~= "" and info.what == "Lua" then
        return format("[lua] %s:%d: %s(): ", src, info.currentline, info.name or "?")
    end
    return format("[lua] %s:%d: ", src, info.currentline)
end

local function log_error(msg)
    py_log(4, msg)
end

local function num2str(n)
    -- lua-nginx-module's ngx_http_lua_write_num: int32 values as
    -- integers, everything else "%.14g" (the LuaJIT way on every runtime).
    if n == floor(n) and n >= -2147483648 and n <= 2147483647 then
        return format("%d", n)
    end
    if n ~= n then
        return "nan" -- LuaJIT's spelling of every NaN; glibc's printf says "-nan" for some
    end
    return format("%.14g", n)
end

function ngx.log(level, ...)
    local lv = tonumber(level)
    if type(level) ~= "number" and lv == nil then
        error("bad argument #1 to 'log' (number expected, got " .. type(level) .. ")", 2)
    end
    if lv < 0 or lv > 8 or lv ~= floor(lv) then
        error("bad argument #1 to 'log' (bad log level: " .. tostring(level) .. ")", 2)
    end
    local n = select("#", ...)
    local parts = { log_prefix(3) }
    for i = 1, n do
        local v = select(i, ...)
        local t = type(v)
        if t == "string" then
            parts[#parts + 1] = v
        elseif t == "number" then
            parts[#parts + 1] = num2str(v)
        elseif t == "nil" then
            parts[#parts + 1] = "nil"
        elseif t == "boolean" then
            parts[#parts + 1] = v and "true" or "false"
        elseif v == NULL then
            parts[#parts + 1] = "null"
        elseif t == "table" then
            local mt = getmetatable(v)
            if not (mt and mt.__tostring) then
                error("bad argument #" .. (i + 1)
                      .. " to 'log' (expected table to have __tostring metamethod)", 2)
            end
            parts[#parts + 1] = tostring(v)
        else
            error("bad argument #" .. (i + 1)
                  .. " to 'log' (string, number, boolean, or nil expected, got " .. t .. ")", 2)
        end
    end
    py_log(lv, concat(parts))
end

---------------------------------------------------------------- time

local WEEKDAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
local MONTH_NUM = {}
for i, m in ipairs(MONTHS) do
    MONTH_NUM[m] = i
end

function ngx.now()
    return floor(now_cache * 1000) / 1000
end

function ngx.time()
    return floor(now_cache)
end

function ngx.update_time()
    now_cache = py_update_time()
end

function ngx.today()
    return os_date("%Y-%m-%d", floor(now_cache))
end

function ngx.localtime()
    return os_date("%Y-%m-%d %H:%M:%S", floor(now_cache))
end

function ngx.utctime()
    return os_date("!%Y-%m-%d %H:%M:%S", floor(now_cache))
end

local function check_time(sec, fname)
    local n = tonumber(sec)
    if n == nil then
        error("bad argument #1 to '" .. fname .. "' (number expected, got "
              .. type(sec) .. ")", 3)
    end
    return floor(n)
end

function ngx.http_time(sec)
    local t = os_date("!*t", check_time(sec, "http_time"))
    return format("%s, %02d %s %d %02d:%02d:%02d GMT", WEEKDAYS[t.wday], t.day,
                  MONTHS[t.month], t.year, t.hour, t.min, t.sec)
end

function ngx.cookie_time(sec)
    local t = os_date("!*t", check_time(sec, "cookie_time"))
    -- nginx: Netscape 3 wants 2-digit years, but only up to 2037.
    local year = t.year
    if year <= 2037 then
        year = format("%02d", year % 100)
    end
    return format("%s, %02d-%s-%s %02d:%02d:%02d GMT", WEEKDAYS[t.wday], t.day,
                  MONTHS[t.month], year, t.hour, t.min, t.sec)
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
local function days_from_civil(y, m, d)
    if m <= 2 then
        y = y - 1
    end
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

function ngx.parse_http_time(str)
    if type(str) ~= "string" then
        error("bad argument #1 to 'parse_http_time' (string expected, got "
              .. type(str) .. ")", 2)
    end
    local d, mon, y, h, mi, s
    -- RFC 1123: "Thu, 18 Nov 2010 11:27:35 GMT"
    d, mon, y, h, mi, s = match(str, "^%a+, (%d%d?) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d)")
    if not d then
        -- RFC 850: "Thursday, 18-Nov-10 11:27:35 GMT"
        d, mon, y, h, mi, s = match(str, "^%a+, (%d%d?)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d)")
        if y then
            y = tonumber(y)
            y = y + (y < 70 and 2000 or 1900)
        end
    end
    if not d then
        -- asctime: "Thu Nov 18 11:27:35 2010"
        mon, d, h, mi, s, y = match(str, "^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)")
    end
    if not d then
        return nil
    end
    local m = MONTH_NUM[mon]
    d, y, h, mi, s = tonumber(d), tonumber(y), tonumber(h), tonumber(mi), tonumber(s)
    if not m or d < 1 or d > 31 or h > 23 or mi > 59 or s > 59 then
        return nil
    end
    return ((days_from_civil(y, m, d) * 24 + h) * 60 + mi) * 60 + s
end

---------------------------------------------------------------- strings

local function str_arg(s)
    if type(s) == "string" then
        return s
    end
    if s == nil then
        return ""
    end
    return tostring(s)
end

local py_md5 = helpers.md5
local py_md5_bin = helpers.md5_bin
local py_sha1_bin = helpers.sha1_bin
local py_crc32 = helpers.crc32
local py_encode_base64 = helpers.encode_base64
local py_decode_base64 = helpers.decode_base64

function ngx.md5(s) return py_md5(str_arg(s)) end
function ngx.md5_bin(s) return py_md5_bin(str_arg(s)) end
function ngx.sha1_bin(s) return py_sha1_bin(str_arg(s)) end

-- As lua-nginx-module's C function: exactly two arguments, each a string
-- or a number (luaL_checklstring).  LuaJIT names the function as its
-- caller did and then adds the caller's position; through pcall (no
-- name) the message is "?" and carries no position.
local py_hmac_sha1 = helpers.hmac_sha1

local function hmac_error(msg, fmt_name)
    local name = getinfo(3, "n").name -- 1 here, 2 the check, 3 ngx.hmac_sha1
    if fmt_name then
        msg = format(msg, name or "?")
    end
    error(msg, name and 4 or 0)
end

local function hmac_arg(v, n)
    local t = type(v)
    if t == "string" then
        return v
    end
    if t == "number" then
        return tostring(v)
    end
    hmac_error("bad argument #" .. n .. " to '%s' (string expected, got " .. t .. ")", true)
end

function ngx.hmac_sha1(...)
    local n = select("#", ...)
    if n ~= 2 then
        local name = getinfo(1, "n").name
        error("expecting 2 arguments, but got " .. n, name and 2 or 0)
    end
    local key, s = ...
    return py_hmac_sha1(hmac_arg(key, 1), hmac_arg(s, 2))
end
function ngx.crc32_short(s) return py_crc32(str_arg(s)) end
function ngx.crc32_long(s) return py_crc32(str_arg(s)) end

-- ngx_http_lua_ngx_escape_sql_str: MySQL's escapes for \0 \b \n \r \t
-- \26 \\ ' " (bytes of UTF-8 sequences are left alone: all are >= 0x80).
local SQL_ESCAPES = {
    ["\0"] = "\\0", ["\b"] = "\\b", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
    ["\26"] = "\\Z", ["\\"] = "\\\\", ["'"] = "\\'", ['"'] = '\\"',
}
-- PUC 5.1 patterns need %z for the NUL byte; later ones take it as is.
local SQL_SPECIAL = pcall(find, "\0", "[\0]") and find("\0", "[\0]") and "[\0\b\n\r\t\26\\'\"]" or "[%z\b\n\r\t\26\\'\"]"

function ngx.quote_sql_str(...)
    if select("#", ...) ~= 1 then
        error("expecting one argument", 2)
    end
    local s = ...
    local t = type(s)
    if t == "number" then
        s = tostring(s)
    elseif t ~= "string" then
        error("bad argument #1 to 'quote_sql_str' (string expected, got " .. t .. ")", 2)
    end
    return "'" .. gsub(s, SQL_SPECIAL, SQL_ESCAPES) .. "'"
end

function ngx.encode_base64(s, no_padding)
    if no_padding ~= nil and type(no_padding) ~= "boolean" then
        error("bad no_padding: boolean expected, got " .. type(no_padding), 2)
    end
    return py_encode_base64(str_arg(s), no_padding == true)
end

function ngx.decode_base64(s)
    if type(s) ~= "string" then
        error("string argument only", 2)
    end
    return py_decode_base64(s)
end

-- Bytes each nginx escape type leaves alone (measured on OpenResty by
-- escaping all 256 bytes); type 2, the default, is the URI component.
local ESCAPE_KEEP = {
    [0] = "!\"$&'()*+,-./0123456789:;<=>@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
    [1] = "!\"$&'()*,-./0123456789:;<=>@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
    [2] = "!'()*-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~",
    [3] = "!$&()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
    [4] = "!#$%&()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
}
local ESCAPE_MAPS = {}
for t = 0, 6 do
    local keep = {}
    if t <= 4 then
        for i = 1, #ESCAPE_KEEP[t] do
            keep[byte(ESCAPE_KEEP[t], i)] = true
        end
    else
        -- types 5 and 6 (mail auth, memcached): only controls, space, "%"
        for i = 33, 255 do
            keep[i] = i ~= 37
        end
    end
    local map = {}
    for i = 0, 255 do
        if not keep[i] then
            map[char(i)] = format("%%%02X", i)
        end
    end
    ESCAPE_MAPS[t] = map
end
local URI_COMPONENT_MAP = ESCAPE_MAPS[2]

function ngx.escape_uri(s, esc_type)
    s = str_arg(s)
    if esc_type == nil then
        return (gsub(s, "[^0-9A-Za-z!'()*%-%._~]", URI_COMPONENT_MAP))
    end
    local t = tonumber(esc_type)
    if t == nil then
        error("bad argument #2 to 'escape_uri' (number expected, got "
              .. type(esc_type) .. ")", 2)
    end
    local map = ESCAPE_MAPS[t]
    if not map then
        error('"type" ' .. tostring(esc_type) .. " out of range", 2)
    end
    return (gsub(s, ".", map))
end

local function hex_char(h)
    return char(tonumber(h, 16))
end

local function unescape(s)
    if find(s, "[%%+]") then
        s = gsub(s, "+", " ")
        s = gsub(s, "%%(%x%x)", hex_char)
    end
    return s
end

function ngx.unescape_uri(s)
    return unescape(str_arg(s))
end

local function add_arg(args, k, v)
    local old = args[k]
    if old == nil then
        args[k] = v
    elseif type(old) == "table" then
        old[#old + 1] = v
    else
        args[k] = { old, v }
    end
end

-- Query strings and urlencoded bodies, the way ngx_http_lua_parse_args
-- reads them: "&"-separated, "+" is a space, "k" alone is true, "k=" is
-- "", empty keys are dropped, at most max (default 100, 0 = no limit).
-- The limit counts "&"-separated pieces, empty keys included: for
-- get_post_args / decode_args (the C parser) "truncated" comes at the
-- max-th "&"; for get_uri_args (resty.core's FFI, by_pieces) when there are
-- more than max pieces, and then the first max pieces with a key are kept.
local function parse_args(s, max, by_pieces)
    local args, len = {}, #s
    local stored, amps = 0, 0
    local truncated = false
    if by_pieces and max > 0 then
        local _, n = gsub(s, "&", "")
        truncated = (n > 0 and n + 1 or 1) > max
    end
    local start = 1
    while start <= len do
        local amp = find(s, "&", start, true)
        local piece = sub(s, start, (amp or len + 1) - 1)
        local eq = find(piece, "=", 1, true)
        local k, v
        if eq then
            k = unescape(sub(piece, 1, eq - 1))
            v = unescape(sub(piece, eq + 1))
        else
            k = unescape(piece)
            v = true
        end
        if k ~= "" then
            add_arg(args, k, v)
            stored = stored + 1
        end
        if by_pieces then
            if truncated and stored == max then
                break
            end
        elseif amp and max > 0 then
            amps = amps + 1
            if amps == max then
                return args, "truncated"
            end
        end
        if not amp then
            break
        end
        start = amp + 1
    end
    if truncated then
        return args, "truncated"
    end
    return args
end

local function check_max(max, fname, argn)
    if max == nil then
        return 100
    end
    local m = tonumber(max)
    if m == nil then
        error("bad argument #" .. argn .. " to '" .. fname .. "' (number expected, got "
              .. type(max) .. ")", 3)
    end
    if m < 0 then
        return 100
    end
    return m
end

-- The function name luaL_argerror puts in the message of one of
-- OpenResty's C functions: the one its caller called it by, "?" when a C
-- function called it (pcall(ngx.encode_args, true)).
local function c_name(fname)
    local info = getinfo(2, "n") -- 1: c_name, 2: the API function (named by its caller)
    return info and info.name and fname or "?"
end

function ngx.decode_args(str, max)
    if type(str) == "number" then
        str = num2str(str)
    elseif type(str) ~= "string" then
        error("bad argument #1 to '" .. c_name("decode_args") .. "' (string expected, got "
              .. type(str) .. ")", 2)
    end
    return parse_args(str, check_max(max, "decode_args", 2))
end

local escape_uri = ngx.escape_uri

local function encode_value(k, v, parts)
    local t = type(v)
    if t == "string" then
        parts[#parts + 1] = k .. "=" .. escape_uri(v)
    elseif t == "number" then
        parts[#parts + 1] = k .. "=" .. escape_uri(num2str(v))
    elseif t == "boolean" then
        if v then
            parts[#parts + 1] = k
        end
    else
        error("attempt to use " .. t .. " as query arg value", 3)
    end
end

function ngx.encode_args(args)
    if type(args) ~= "table" then
        error("bad argument #1 to '" .. c_name("encode_args") .. "' (table expected, got "
              .. type(args) .. ")", 2)
    end
    local parts = {}
    for k, v in pairs(args) do
        if type(k) ~= "string" then
            error('attempt to use a non-string key in the "args" option table', 2)
        end
        local ek = escape_uri(k)
        if type(v) == "table" then
            for _, item in ipairs(v) do
                encode_value(ek, item, parts)
            end
        else
            encode_value(ek, v, parts)
        end
    end
    return concat(parts, "&")
end

---------------------------------------------------------------- output

local NO_BODY_STATUS = { [204] = true, [304] = true }

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

local function reason(status)
    return reasons[status] or "Unknown"
end

-- "Status: 200 OK\r\n" and the like, made once per status
local status_lines = setmetatable({}, {
    __index = function(t, status)
        local line = "Status: " .. format("%d", status) .. " " .. reason(status) .. "\r\n"
        if type(status) == "number" and status >= 100 and status <= 999 then
            t[status] = line
        end
        return line
    end,
})
local DEFAULT_TYPE_LINE = "Content-Type: " .. DEFAULT_TYPE .. "\r\n"

-- The CGI header block: "Status:" first (Monkey only honours it there),
-- then Content-Type, then the script's headers in the order first set;
-- then `body`, if given (one string made, not two).
local function header_block(r, status, content_length, streaming, error_type, body)
    local status_line = status_lines[status]
    local status_text = r.status_text -- CGI mode: the script's own (cgi.lua)
    if status_text and status == r.status and not error_type then
        status_line = "Status: " .. status_text .. "\r\n"
    end
    local hvals = r.hvals
    local ct = hvals["content-type"]
    local ct_line = ""
    if error_type then
        ct_line = "Content-Type: " .. error_type .. "\r\n"
    elseif ct then
        ct_line = "Content-Type: " .. ct[#ct] .. "\r\n"
    elseif not NO_BODY_STATUS[status] and not r.cgi then -- CGI: as the script said
        ct_line = DEFAULT_TYPE_LINE
    end
    local cl = hvals["content-length"]
    local cl_line = ""
    if content_length and (error_type or not cl) then
        cl_line = "Content-Length: " .. content_length .. "\r\n"
    elseif cl and not error_type then
        cl_line = "Content-Length: " .. cl[#cl] .. "\r\n"
    end
    local hkeys = r.hkeys
    if #hkeys == 0 and not streaming then -- the script set no other header
        return status_line .. ct_line .. cl_line .. "\r\n" .. (body or "")
    end
    local lines = { status_line, ct_line, cl_line }
    for i = 1, #hkeys do
        local key = hkeys[i]
        local h = hvals[key]
        if h and key ~= "content-type" and key ~= "content-length" and h.pos == i then
            local name = h.name
            for j = 1, #h do
                lines[#lines + 1] = name .. ": " .. h[j] .. "\r\n"
            end
        end
    end
    if streaming and not hvals["x-accel-buffering"] then
        -- stock nginx buffers FastCGI responses; a script that flushes
        -- means to stream.
        lines[#lines + 1] = "X-Accel-Buffering: no\r\n"
    end
    lines[#lines + 1] = "\r\n"
    lines[#lines + 1] = body
    return concat(lines)
end

local function commit_headers(r)
    r.header_sent = true
    if r.status == 0 then
        r.status = 200
    end
end

-- nginx's not_modified filter, which FastCGI responses never meet (nginx
-- runs it on upstream responses only when it caches them): a 200 whose
-- Last-Modified (exactly) and ETag match the request's If-Modified-Since
-- and If-None-Match (weak comparison, "*") becomes a 304 without a body.
local function etag_matches(list, etag)
    if list == "*" then
        return true
    end
    etag = gsub(etag, "^W/", "")
    for item in gmatch(list, "[^,]+") do
        local tag = gsub(gsub(item, "^%s+", ""), "%s+$", "")
        if gsub(tag, "^W/", "") == etag then
            return true
        end
    end
    return false
end

local params_of -- defined with ngx.var below

local function not_modified(r)
    -- only a response with a validator can be "not modified": the
    -- request's params are fetched for nothing else here
    local hvals = r.hvals
    local lm, etag = hvals["last-modified"], hvals["etag"]
    if not lm and not etag then
        return false
    end
    local ims, inm
    local params = params_of(r)
    for i = 1, #params, 2 do
        local k = params[i]
        if k == "HTTP_IF_MODIFIED_SINCE" then
            ims = params[i + 1]
        elseif k == "HTTP_IF_NONE_MATCH" then
            inm = params[i + 1]
        end
    end
    if not ims and not inm then
        return false
    end
    if ims then
        local t = lm and ngx.parse_http_time(lm[#lm])
        if not t or ngx.parse_http_time(ims) ~= t then
            return false
        end
    end
    if inm then
        if not etag or not etag_matches(inm, etag[#etag]) then
            return false
        end
    end
    return true
end

-- Everything printed so far, as wire bytes; the header block goes in
-- front of the first such chunk.  final: nothing more will be printed,
-- so a Content-Length can be given.  spilling: the output outgrew its
-- buffer (spill below), which is no sign that the script streams.
local function take_output(r, final, spilling)
    local body = ""
    local nout = r.nout
    if nout > 0 then
        r.nbuf = 0
        local out = r.out
        if nout == 1 then
            body = out[1]
        elseif nout == 2 then -- ngx.say's text and newline
            body = out[1] .. out[2]
        else
            body = concat(out, "", 1, nout)
        end
        if not final then -- else the request ends: nothing will be printed
            r.out = {}
        end
        r.nout = 0
    end
    if r.emitted then
        if r.head then
            return ""
        end
        return body
    end
    commit_headers(r)
    r.emitted = true
    if r.status == 200 and not r.cgi and not_modified(r) then
        r.status = 304
        r.head = true -- header only: later output is dropped too
    end
    local status = r.status
    local length
    if final and not NO_BODY_STATUS[status] then
        length = #body
    end
    local streaming = not final and not spilling
    if r.head or NO_BODY_STATUS[status] then
        return header_block(r, status, length, streaming)
    end
    return header_block(r, status, length, streaming, nil, body)
end

-- Output held in the request's buffer is bounded (config's
-- write_buffer_high, output_buffer_limit): past FLUSH_AT bytes ngx.print
-- and ngx.say send it and wait for the front server as ngx.flush(true)
-- does; where the script cannot wait (a runtime without
-- coroutine.isyieldable, inside a C callback) it piles up to OUTPUT_LIMIT,
-- past which the request fails.
local FLUSH_AT = helpers.output_flush_size or 262144
local OUTPUT_LIMIT = helpers.output_buffer_limit or 0
local isyieldable = coroutine.isyieldable

local function spill(r)
    if isyieldable and isyieldable() then
        local data = take_output(r, false, true)
        if data ~= "" then
            co_yield(IO, "write", data)
        end
    elseif OUTPUT_LIMIT > 0 and r.nbuf > OUTPUT_LIMIT then
        -- level 2: the script's line (print and say tail-call down here)
        error("response output of " .. r.nbuf .. " bytes buffered while the script cannot"
              .. " wait for the client: over output_buffer_limit (" .. OUTPUT_LIMIT
              .. " bytes); call ngx.flush(true) where it can", 2)
    end
    return 1
end

local function error_response(r, status)
    -- nginx's special response: the script's headers stay, the body is
    -- the default error page.
    r.header_sent = true
    r.emitted = true
    r.status = status
    if NO_BODY_STATUS[status] then
        return header_block(r, status, nil, false)
    end
    local page = py_error_page(status)
    if r.head then
        return header_block(r, status, #page, false, "text/html")
    end
    return header_block(r, status, #page, false, "text/html", page)
end

-- Appends v's bytes to buf; false and a reason when v cannot be printed.
local function append_value(buf, v)
    local t = type(v)
    if t == "string" then
        buf[#buf + 1] = v
    elseif t == "number" then
        buf[#buf + 1] = num2str(v)
    elseif t == "nil" then
        buf[#buf + 1] = "nil"
    elseif t == "boolean" then
        buf[#buf + 1] = v and "true" or "false"
    elseif v == NULL then
        buf[#buf + 1] = "null"
    elseif t == "table" then
        local n = #v
        for k in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
                return false, "non-array table found"
            end
        end
        for i = 1, n do
            local ok, err = append_value(buf, v[i])
            if not ok then
                return false, err
            end
        end
    else
        return false, "string, number, boolean, nil, ngx.null, or array table expected, "
                      .. "but got " .. t
    end
    return true
end

local function output(fname, newline, ...)
    local r = cur
    if not r then
        no_request()
    end
    if r.eof then
        return nil, "seen eof"
    end
    local n = select("#", ...)
    local out = r.out
    local nout = r.nout
    local nbuf = r.nbuf
    if n == 1 and type(...) == "string" then
        local s = ...
        nout = nout + 1
        out[nout] = s
        nbuf = nbuf + #s
    else
        local buf = {}
        for i = 1, n do
            local ok, err = append_value(buf, (select(i, ...)))
            if not ok then
                -- level 2: ngx.say tail-calls output, its frame is gone
                error("bad argument #" .. i .. " to '" .. fname .. "' (" .. err .. ")", 2)
            end
        end
        for i = 1, #buf do
            nout = nout + 1
            out[nout] = buf[i]
            nbuf = nbuf + #buf[i]
        end
    end
    if newline then
        nout = nout + 1
        out[nout] = "\n"
        nbuf = nbuf + 1
    end
    r.nout = nout
    r.nbuf = nbuf
    if not r.header_sent then
        commit_headers(r)
    end
    if nbuf >= FLUSH_AT then
        return spill(r)
    end
    return 1
end

function ngx.print(...)
    return output("print", false, ...)
end

function ngx.say(...)
    return output("say", true, ...)
end

function ngx.flush(wait)
    local r = cur
    if not r then
        no_request()
    end
    if r.eof then
        return nil, "seen eof"
    end
    if r.http10 == nil then
        -- lua_http10_buffering (on by default): an HTTP/1.0 response is
        -- sent whole, with a Content-Length, so ngx.flush is a no-op
        local params = params_of(r)
        r.http10 = false
        for i = 1, #params, 2 do
            if params[i] == "SERVER_PROTOCOL" then
                r.http10 = params[i + 1] == "HTTP/1.0"
            end
        end
    end
    if r.http10 then
        return nil, "buffering"
    end
    -- as ngx_http_lua_ngx_flush: nothing before the headers, nor before
    -- the first body bytes unless it waits (the status may still change);
    -- a CGI script's flush of its header block sends it
    if not r.cgi and not (r.header_sent and (wait or r.seen_body)) then
        local out = r.out
        for i = 1, r.nout do
            if out[i] ~= "" then
                r.seen_body = true
                break
            end
        end
        if not r.header_sent or not (wait or r.seen_body) then
            return nil, "nothing to flush"
        end
    end
    local data = take_output(r, false)
    if data ~= "" then
        co_yield(IO, "write", data)
    end
    return 1
end

function ngx.eof()
    local r = cur
    if not r then
        no_request()
    end
    if r.eof then
        return nil, "seen eof"
    end
    local data = take_output(r, true)
    r.eof = true
    if data ~= "" then
        co_yield(IO, "write", data)
    end
    return 1
end

function ngx.send_headers()
    local r = cur
    if not r then
        no_request()
    end
    if r.header_sent then
        return nil, "header already sent"
    end
    commit_headers(r)
    return 1
end

function ngx.exit(rc)
    local r = cur
    if not r and not cur_ctx then
        no_request()
    end
    local status = tonumber(rc)
    if status == nil then
        error("bad argument #1 to 'exit' (number expected, got " .. type(rc) .. ")", 2)
    end
    if not r then -- a timer: ends it, with its light threads
        co_yield(IO, "exit", status)
    end
    if status == -2 or status == -4 then
        error("bad argument to 'ngx.exit': does not accept NGX_AGAIN or NGX_DONE", 2)
    end
    if r.header_sent and status >= 300 and status ~= 408 and status ~= 499
            and status ~= 444 then
        if status ~= r.status then
            log_error(format("attempt to set status %d via ngx.exit after sending out the "
                             .. "response status %d", status, r.status))
        end
        status = 200
    end
    co_yield(IO, "exit", status)
    -- never resumed
end

local REDIRECT_OK = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

function ngx.redirect(uri, status)
    local r = cur
    if not r then
        no_request()
    end
    if type(uri) == "number" then -- luaL_checklstring takes a number
        uri = tostring(uri)
    elseif type(uri) ~= "string" then
        error("bad argument #1 to 'redirect' (string expected, got " .. type(uri) .. ")", 2)
    end
    status = status == nil and 302 or tonumber(status)
    if not REDIRECT_OK[status] then
        error("only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, "
              .. "ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and "
              .. "ngx.HTTP_TEMPORARY_REDIRECT are allowed", 2)
    end
    if r.header_sent then
        error("attempt to call ngx.redirect after sending out the headers", 2)
    end
    local bad = find(uri, "[%c]")
    if bad then
        error(format('unsafe byte "0x%02x" in redirect uri "%s"', byte(uri, bad),
                     (gsub(uri, "%c", function(c) return format("\\x%02X", byte(c)) end))), 2)
    end
    local key = "location"
    if not r.hvals[key] then
        new_header(r, key, { name = "Location" })
    end
    local h = r.hvals[key]
    for i = #h, 1, -1 do
        h[i] = nil
    end
    h[1] = uri
    co_yield(IO, "exit", status)
end

function ngx.sleep(sec)
    if not cur_ctx then
        no_request()
    end
    local s = tonumber(sec)
    if s == nil then
        error("bad argument #1 to 'sleep' (number expected, got " .. type(sec) .. ")", 2)
    end
    if s < 0 then
        error('invalid sleep duration "' .. format("%d", floor(s * 1000)) .. '"', 2)
    end
    co_yield(IO, "sleep", s)
end

---------------------------------------------------------------- ngx.header

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
        local r = cur
        if not r then
            no_request()
        end
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
        local r = cur
        if not r then
            no_request()
        end
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
local header_proxy = setmetatable({}, header_mt)

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
    local r = cur
    if not r then
        no_request()
    end
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

---------------------------------------------------------------- ngx.var

-- The request's FastCGI params, { name, value, name, value, ... }: asked
-- of Python (one crossing) the first time the request needs them, so a
-- script that reads no variable and no header never pays for them.
function params_of(r)
    local params = r.params
    if not params then
        params = { py_params() }
        r.params = params
    end
    return params
end

local function request_vars(r)
    local vars = r.vars
    if vars then
        return vars
    end
    vars = {}
    local params = params_of(r)
    for i = 1, #params, 2 do
        local k = lower(params[i])
        if vars[k] == nil then
            vars[k] = params[i + 1]
        end
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
        local r = cur
        if not r then
            no_request()
        end
        if type(name) ~= "string" then
            if type(name) == "number" then
                return nil -- regex captures ($1...) do not exist here
            end
            error("bad variable name", 2)
        end
        return get_var(r, lower(name))
    end,
    __newindex = function(_, name, value)
        local r = cur
        if not r then
            no_request()
        end
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

---------------------------------------------------------------- ngx.req

local req = {}
ngx.req = req

function req.get_method()
    local r = cur
    if not r then
        no_request()
    end
    return get_var(r, "request_method")
end

function req.http_version()
    local r = cur
    if not r then
        no_request()
    end
    local proto = get_var(r, "server_protocol")
    local v = proto and match(proto, "^HTTP/(%d+%.%d+)$")
    if v == "2.0" then
        return 2.0
    end
    return v and tonumber(v) or nil
end

function req.start_time()
    local r = cur
    if not r then
        no_request()
    end
    return r.start_time
end

function req.is_internal()
    return false
end

function req.get_uri_args(max)
    local r = cur
    if not r then
        no_request()
    end
    max = check_max(max, "get_uri_args", 1)
    return parse_args(get_var(r, "args") or "", max, true)
end

function req.set_uri_args(args)
    local r = cur
    if not r then
        no_request()
    end
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
    local r = cur
    if not r then
        no_request()
    end
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
    local r = cur
    if not r then
        no_request()
    end
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
    local r = cur
    if not r then
        no_request()
    end
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
    local r = cur
    if not r then
        no_request()
    end
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

-- The body (docs/lua-api.md "Request body").  Python keeps the bytes (in
-- memory up to client_body_buffer_size, else in a temp file); the script
-- sees r.body_state: nil (not read), "memory" (r.body), "file"
-- (r.body_file) or "discarded".

function req.read_body()
    local r = cur
    if not r then
        no_request()
    end
    if r.body_state then
        return
    end
    -- a body that came with the params needs no wait
    local res = py_body_now() or co_yield(IO, "read_body")
    if res.status then
        -- As nginx: a body too large (413), short or malformed (400), or one
        -- that could not be stored (500) ends the request with that status.
        r.body_state = "failed"
        return ngx.exit(res.status)
    end
    if res.file then
        r.body_state = "file"
        r.body_file = res.file
    else
        r.body_state = "memory"
        r.body = res.data
    end
end

function req.discard_body()
    local r = cur
    if not r then
        no_request()
    end
    if r.body_state then
        return -- already read: nothing to discard
    end
    r.body_state = "discarded"
    co_yield(IO, "discard_body")
end

function req.get_body_data(max_bytes)
    local r = cur
    if not r then
        no_request()
    end
    local body = r.body
    if r.body_state ~= "memory" or body == "" then
        return nil
    end
    if max_bytes ~= nil then
        local n = tonumber(max_bytes)
        if n == nil then
            error("bad argument #1 to 'get_body_data' (number expected, got "
                  .. type(max_bytes) .. ")", 2)
        end
        if n > 0 and n < #body then
            return sub(body, 1, n)
        end
    end
    return body
end

function req.get_body_file()
    local r = cur
    if not r then
        no_request()
    end
    if r.body_state ~= "file" then
        return nil
    end
    return r.body_file
end

-- ngx.req.set_body_data / init_body / append_body / finish_body: the body
-- the script sees from now on (get_body_data, get_body_file, get_post_args,
-- $request_body, Content-Length), as OpenResty's content phase sees it; the
-- front server has sent the request already, so nothing else changes.  A
-- body built past init_body's buffer goes to a temp file of the request's
-- own (Python's body_build helper), removed when the request ends.
local py_body_build = helpers.body_build

local function body_request(fname, nargs, want, ...)
    if nargs ~= want and not (want == 1 and fname == "init_body" and nargs == 0) then
        error((fname == "init_body" and "expecting 0 or 1 argument but seen "
               or fname == "finish_body" and "expecting 0 argument but seen "
               or "expecting 1 arguments but seen ") .. nargs, 3)
    end
    local data = ...
    if want == 1 and fname ~= "init_body" then
        if type(data) == "number" then
            data = num2str(data)
        elseif type(data) ~= "string" then
            error("bad argument #1 to '" .. fname .. "' (string expected, got "
                  .. type(data) .. ")", 3)
        end
    end
    local r = cur
    if not r then
        no_request()
    end
    return r, data
end

-- what nginx's headers_in.content_length becomes: $http_content_length,
-- $content_length and get_headers()["content-length"]
local function set_body_length(r, n)
    local value = format("%d", n)
    local params, out = params_of(r), {}
    for i = 1, #params, 2 do
        local k = params[i]
        if k ~= "CONTENT_LENGTH" and k ~= "HTTP_CONTENT_LENGTH" then
            out[#out + 1] = k
            out[#out + 1] = params[i + 1]
        end
    end
    out[#out + 1] = "CONTENT_LENGTH"
    out[#out + 1] = value
    out[#out + 1] = "HTTP_CONTENT_LENGTH"
    out[#out + 1] = value
    r.params = out
    r.header_list, r.vars = nil, nil
end

local function check_body_read(r)
    local state = r.body_state
    if state == "discarded" then
        error("request body already discarded asynchronously", 3)
    elseif not state or state == "failed" then
        error("request body not read yet", 3)
    end
end

function req.set_body_data(...)
    local r, data = body_request("set_body_data", select("#", ...), 1, ...)
    check_body_read(r)
    r.new_body = nil
    py_body_build()
    r.body_state, r.body, r.body_file = "memory", data, nil
    set_body_length(r, #data)
end

function req.init_body(...)
    local r, size = body_request("init_body", select("#", ...), 1, ...)
    check_body_read(r)
    local default = py_body_build()
    if select("#", ...) == 1 then
        local n = tonumber(size)
        if n == nil then
            error("bad argument #1 to 'init_body' (number expected, got " .. type(size) .. ")", 2)
        end
        n = n >= 0 and floor(n) or -floor(-n) -- luaL_checkinteger truncates
        if n < 0 then
            error("bad size argument: " .. format("%d", n), 2)
        end
        size = n
    else
        size = default
    end
    -- size 0: every append goes to the file (nginx's request_body_in_file_only)
    r.new_body = { size = size, parts = {}, used = 0, length = 0 }
    r.body_state, r.body, r.body_file = "memory", "", nil
end

local function spill(r, data)
    local path, err = py_body_build(data)
    if not path then
        error("fail to write file", 3)
    end
    r.new_body.file = path
end

function req.append_body(...)
    local r, data = body_request("append_body", select("#", ...), 1, ...)
    local nb = r.new_body
    if not nb then
        error("request_body not initialized", 2)
    end
    nb.length = nb.length + #data
    if nb.size == 0 then
        spill(r, data)
        return
    end
    -- nginx fills a buffer of `size` bytes and writes it out when full and
    -- more comes: a body of exactly `size` bytes stays in memory
    local parts, room = nb.parts, nb.size - nb.used
    while #data > 0 do
        if room == 0 then
            spill(r, concat(parts))
            parts = {}
            nb.parts, nb.used, room = parts, 0, nb.size
        end
        local piece = #data <= room and data or sub(data, 1, room)
        parts[#parts + 1] = piece
        nb.used = nb.used + #piece
        room = room - #piece
        data = sub(data, #piece + 1)
    end
end

function req.finish_body(...)
    local r = body_request("finish_body", select("#", ...), 0)
    local nb = r.new_body
    if not nb then
        error("request_body not initialized", 2)
    end
    if nb.file then
        spill(r, concat(nb.parts))
        r.body_state, r.body, r.body_file = "file", nil, nb.file
        nb.parts, nb.used = {}, 0
    else
        r.body_state, r.body, r.body_file = "memory", concat(nb.parts), nil
    end
    set_body_length(r, nb.length)
end

function req.get_post_args(max)
    local r = cur
    if not r then
        no_request()
    end
    max = check_max(max, "get_post_args", 1)
    local state = r.body_state
    if state == "memory" then
        return parse_args(r.body, max)
    elseif state == "file" then
        -- as OpenResty: read it with get_body_file()
        return nil, "request body in temp file not supported"
    elseif state == "discarded" or state == "socket" then
        return {}
    end
    return nil, "request body not read yet"
end

-- fcgi-lua extension: the body as multipart/form-data.
--   res, err = ngx.req.get_multipart(max_parts?)
--   res.fields[name] = "value" or {"v1", "v2"}
--   res.files = { {name=, filename=, content_type=, size=, path=}, ... }
function req.get_multipart(max)
    local r = cur
    if not r then
        no_request()
    end
    max = check_max(max, "get_multipart", 1)
    local done = r.multipart
    if done then
        return done[1], done[2]
    end
    req.read_body()
    if r.body_state == "discarded" then
        return nil, "request body discarded"
    elseif r.body_state == "socket" then
        return nil, "request body read by ngx.req.socket"
    end
    local res = co_yield(IO, "multipart", max)
    if res.status then
        return ngx.exit(res.status)
    end
    if res.err then
        done = { nil, res.err }
    else
        done = { { fields = res.fields, files = res.files }, res.truncated and "truncated" or nil }
    end
    r.multipart = done
    return done[1], done[2]
end

---------------------------------------------------------------- FastCGI limits

local function unavailable(what)
    return function()
        error(what .. " is not available in fcgi-lua: over FastCGI the front server owns "
              .. "the client connection and the location tree", 2)
    end
end

-- ngx.req.socket: socket.lua (the body's stream reads like a cosocket)
req.set_body_file = unavailable("ngx.req.set_body_file")

-- ngx.exec: over FastCGI the front server owns the location tree, so the
-- internal redirect is asked of it with X-Accel-Redirect (nginx performs
-- it; the target location should be `internal`).  Lighttpd and Monkey do
-- not honour the header: there the response is an empty 200.
function ngx.exec(uri, args)
    local r = cur
    if not r then
        no_request()
    end
    if type(uri) ~= "string" then
        if type(uri) ~= "number" then
            error("bad argument #1 to 'exec' (string expected, got " .. type(uri) .. ")", 2)
        end
        uri = num2str(uri)
    end
    if uri == "" then
        error("The uri argument is empty", 2)
    end
    if r.header_sent then
        error("attempt to call ngx.exec after sending out response headers", 2)
    end
    local user_args
    local t = type(args)
    if t == "table" then
        user_args = ngx.encode_args(args)
    elseif t == "string" then
        user_args = args
    elseif t == "number" then
        user_args = num2str(args)
    elseif t ~= "nil" then
        error("bad argument #2 to 'exec' (string, number, or table expected, but got "
              .. t .. ")", 2)
    end
    -- ngx_http_parse_unsafe_uri's refusals: control bytes, ".." segments
    local path = match(uri, "^[^?]*")
    if find(uri, "%c") or find("/" .. path .. "/", "/%.%./") then
        error("unsafe uri", 2)
    end
    if user_args and user_args ~= "" and byte(uri, 1) ~= 64 then -- not "@named"
        if find(uri, "?", 1, true) then
            uri = uri .. "&" .. user_args
        else
            uri = uri .. "?" .. user_args
        end
    end
    -- nginx discards the body of a response it redirects internally
    r.out = {}
    r.nout = 0
    r.nbuf = 0
    set_header(r, "X-Accel-Redirect", uri)
    co_yield(IO, "exit", 0)
end
ngx.location = {
    capture = unavailable("ngx.location.capture"),
    capture_multi = unavailable("ngx.location.capture_multi"),
}

---------------------------------------------------------------- ngx itself

ngx.get_phase = function()
    if phase then
        return phase -- "init", "init_worker"
    end
    return (cur or not cur_ctx) and "content" or "timer"
end

local ngx_dynamic = {
    status = function(r) return r.status end,
    ctx = function(r)
        local ctx = r.ctx
        if not ctx then
            ctx = {}
            r.ctx = ctx
        end
        return ctx
    end,
    headers_sent = function(r) return r.header_sent end,
    is_subrequest = function() return false end, -- OpenResty's comes from here too
}

-- Names OpenResty has in `ngx` (t/062-count.t counts them): the phase as
-- lua-nginx-module's context number, ngx.arg (set_by_lua's and
-- body_filter_by_lua's arguments: no such phase here) and
-- run_worker_thread (no thread pool exists in fcgi-lua).
local phase_numbers = { content = 0x0008, timer = 0x0080, init_worker = 0x0100 }
local phase_contexts = {
    content = "content_by_lua*", timer = "ngx.timer", init_worker = "init_worker_by_lua*",
    init = "init_by_lua*",
}

ngx._phase_ctx = function()
    return phase_numbers[ngx.get_phase()]
end

ngx.get_raw_phase = function()
    return phase_numbers[ngx.get_phase()]
end

ngx.arg = setmetatable({}, {
    __index = function()
        if not (cur or cur_ctx) then
            no_request()
        end
        error("API disabled in the current context", 2)
    end,
    __newindex = function()
        error("API disabled in the context of " .. phase_contexts[ngx.get_phase()], 2)
    end,
})

ngx.run_worker_thread = function(...)
    if not (cur or cur_ctx) then
        no_request()
    end
    if select("#", ...) < 3 then
        return false, "expecting at least 3 arguments"
    end
    local pool = ...
    if type(pool) ~= "string" and type(pool) ~= "number" then
        return false, "threadpool should be a string"
    end
    return false, "thread pool " .. pool .. " not found"
end

-- ndk.set_var.DIRECTIVE(value): an nginx set_* directive (set-misc ...) as
-- a function.  Over FastCGI there are no nginx directives: every lookup
-- fails as it does in an nginx built without the directive's module.
ndk = {
    set_var = setmetatable({}, {
        __index = function(_, name)
            error('ndk.set_var: directive "' .. tostring(name)
                  .. '" not found or does not use ndk_set_var_value', 2)
        end,
        __newindex = function()
            error("not allowed", 2)
        end,
    }),
}

ngx.header = header_proxy

setmetatable(ngx, {
    __index = function(_, key)
        local get = ngx_dynamic[key]
        if get then
            local r = cur
            if not r then
                if key ~= "ctx" or not cur_ctx then
                    no_request()
                end
                r = cur_ctx -- a timer has its own ngx.ctx
            end
            return get(r)
        end
        return nil
    end,
    __newindex = function(t, key, value)
        if key == "status" then
            local r = cur
            if not r then
                no_request()
            end
            if r.header_sent then
                log_error("attempt to set ngx.status after sending out response headers")
                return
            end
            local s = tonumber(value)
            if s == nil then
                error("bad argument #1 to 'status' (number expected, got " .. type(value) .. ")",
                      2)
            end
            -- the integer part, as nginx's lua_tointeger reads it ("201.7": 201)
            r.status = s >= 0 and floor(s) or -floor(-s)
        elseif key == "ctx" then
            local r = cur or cur_ctx
            if not r then
                no_request()
            end
            if type(value) ~= "table" then
                error("ctx should be a table while getting a " .. type(value) .. " value", 2)
            end
            r.ctx = value
        elseif key == "headers_sent" then
            error("attempt to set ngx.headers_sent", 2)
        elseif t ~= ngx then
            -- a request writing through its read-only view (isolation.lua)
            error("attempt to write ngx." .. tostring(key)
                  .. ": shared by every request and read-only (docs/sandbox.md)", 2)
        else
            rawset(t, key, value)
        end
    end,
})

---------------------------------------------------------------- coroutines

-- The user's coroutines pass our I/O yields up to the request's own
-- coroutine, so ngx.sleep and friends work inside them (as in OpenResty).
-- While one waits, OpenResty's coroutine.status calls it "running" and
-- the coroutine that resumed it "normal" (thread.lua): io_waiting[co],
-- passing[resumer] = co.
local io_waiting = setmetatable({}, { __mode = "k" })
local passing = setmetatable({}, { __mode = "k" })
local pass_up

local function passed_down(me, co, ...)
    passing[me] = nil
    io_waiting[co] = nil
    return pass_up(co, co_resume(co, ...))
end

function pass_up(co, ok, ...)
    if ok and (...) == IO and co_status(co) == "suspended" then
        local me = co_running() or false -- 5.1: nil in the main thread
        passing[me] = co
        io_waiting[co] = true
        return passed_down(me, co, co_yield(IO, select(2, ...)))
    end
    return ok, ...
end

local function user_resume(co, ...)
    return pass_up(co, co_resume(co, ...))
end

local function wrap_result(ok, ...)
    if not ok then
        error((...), 0)
    end
    return ...
end

coroutine.resume = user_resume
coroutine.wrap = function(f)
    local co = co_create(f)
    return function(...)
        return wrap_result(user_resume(co, ...))
    end
end

---------------------------------------------------------------- require

-- Debian installs pure-Lua modules (lua-nginx-cookie, lua-resty-*) under
-- /usr/share/lua/5.x, which lupa's built-in package.path lacks.
do
    local v = match(_VERSION, "%d+%.%d+") or "5.1"
    local dir = "/usr/share/lua/" .. v .. "/"
    if not find(package.path, dir .. "?.lua", 1, true) then
        package.path = package.path .. ";" .. dir .. "?.lua;" .. dir .. "?/init.lua"
    end
    -- Debian's Lua C modules (lua-cjson, lua-lpeg, lua-filesystem...) for
    -- this runtime's ABI (5.1 for LuaJIT); empty when C modules cannot
    -- load into this VM (runtimes.py: only the process's first runtime).
    local cdir = helpers.c_module_dir or ""
    if cdir ~= "" and not find(package.cpath, cdir .. "?.so", 1, true) then
        package.cpath = package.cpath .. ";" .. cdir .. "?.so"
    end
    -- OpenResty's names for modules Debian packages under another name;
    -- tried last, so a real resty.cookie on the path wins.
    local ALIASES = { ["resty.cookie"] = "nginx.cookie" }
    local searchers = package.searchers or package.loaders
    searchers[#searchers + 1] = function(name)
        local alias = ALIASES[name]
        if not alias then
            return "\n\tno alias for '" .. name .. "'"
        end
        return function() return require(alias) end
    end
end

---------------------------------------------------------------- the driver

-- A request's global table falls back to the shared globals: through
-- their read-only view once isolation.lua seals them (engine.py).
local env_mt = { __index = _G }

-- coroutine -> the context (request or timer) that owns it, for
-- isolation.lua's coroutine.resume: no request resumes another's.  Weak
-- both ways: LuaJIT has no ephemerons, so a weak key whose value (the
-- request) holds it (r.co) would never be collected.
local owners = setmetatable({}, { __mode = "kv" })

-- Hooks for the Lua layers the engine loads after this file (mk.lua,
-- cgi.lua): the request internals they need, never reachable from a
-- script.  cgi.lua fills in cgi_wrap and is_cgi_shebang.
local extensions = {
    IO = IO,
    current = function() return cur end,
    -- The context running now (the request, or a timer): what cosockets
    -- and light threads belong to.
    context = function() return cur_ctx end,
    -- Appends to the request's output without committing the headers,
    -- so they can still change until the first flush (mk.print).
    buffer = function(r, s)
        local nout = r.nout + 1
        r.out[nout] = s
        r.nout = nout
        local nbuf = r.nbuf + #s
        r.nbuf = nbuf
        if OUTPUT_LIMIT > 0 and nbuf > OUTPUT_LIMIT then
            error("response output of " .. nbuf .. " bytes buffered before its headers are"
                  .. " sent: over output_buffer_limit (" .. OUTPUT_LIMIT .. " bytes)", 3)
        end
    end,
    cgi_marked = setmetatable({}, { __mode = "k" }), -- factories of "#!lua" files
    env_mt = env_mt, -- isolation.lua
    owners = owners, -- isolation.lua
    cgi_wrap = function(r, fn) return fn end,
    is_cgi_shebang = function(line) return false end,
}

-- Compile once per code-cache entry into a factory: calling it gives a
-- fresh closure, whose environment is the request's own global table.
local function compile(src, chunkname)
    local cgi_marked = false
    if byte(src, 1) == 35 then -- "#!": drop the line, keep the numbering
        cgi_marked = extensions.is_cgi_shebang(match(src, "^[^\n]*"))
        src = gsub(src, "^#[^\n]*", "", 1)
    end
    local f, err = loadstring(src, chunkname)
    if not f then
        return nil, err -- report the error of the script as written
    end
    if setfenv then
        f, err = loadstring("return function(...) " .. src .. "\nend", chunkname)
    else
        f, err = loadstring("local _ENV = ...; return function(...) " .. src .. "\nend",
                            chunkname)
    end
    if f and cgi_marked then
        extensions.cgi_marked[f] = true
    end
    return f, err
end

local function finish(r)
    if r.eof or r.timer then
        return "done", "", nil
    end
    return "done", take_output(r, true), nil
end

local function finish_exit(r, rc)
    if r.eof or r.timer then
        return "done", "", nil
    end
    if not r.header_sent and r.status == 0 and rc >= 200 then
        r.status = rc
    end
    if rc == 0 or r.header_sent or (rc >= 200 and rc < 300 and rc ~= 204) then
        return finish(r)
    end
    if rc >= 300 or rc == 204 then
        return "done", error_response(r, rc), nil
    end
    if rc < 0 then
        -- NGX_ERROR and friends: nginx would drop the connection; over
        -- FastCGI the nearest thing is a 500.
        return "done", error_response(r, 500), nil
    end
    return finish(r)
end

-- The entry thread failed: the traceback, and whether a response is out.
local function fail(r, err)
    if type(err) ~= "string" then
        err = tostring(err)
    end
    local ok, tb = pcall(traceback, r.co, err)
    if not ok then
        tb = err -- no memory left even for the traceback
    end
    if err == "not enough memory" and co_close then
        -- lua_memory_limit: free what the script held before Python (whose
        -- calls into Lua are not protected) sees the failure
        co_close(r.co)
        collectgarbage()
    end
    local response = r.emitted and "" or nil
    r.dead = true
    return "error", tb, response
end

-- The result of one resume of the entry thread: a command for Python, or
-- the end.  With light threads, thread.lua schedules them all.
local function step(r, ok, first, cmd, arg)
    if r.threads then
        return extensions.thread_step(r, ok, first, cmd, arg)
    end
    if not ok then
        return fail(r, first)
    end
    if first == IO then -- (never what a script returns: IO is private)
        if cmd == "exit" then
            r.dead = true
            return finish_exit(r, arg)
        end
        return cmd, arg, nil
    end
    if co_status(r.co) == "dead" then
        r.dead = true
        return finish(r)
    end
    -- a bare coroutine.yield() in the request itself: let others run
    return "sleep", 0, nil
end

local function new_request(head, now)
    local env = setmetatable({}, env_mt)
    env._G = env
    return {
        -- params: fetched when first needed (params_of)
        env = env,
        status = 0,
        hkeys = NO_HEADERS,
        hvals = NO_HEADERS,
        out = {},
        nout = 0,
        nbuf = 0, -- bytes in out
        header_sent = false,
        emitted = false,
        eof = false,
        head = head,
        start_time = floor(now * 1000) / 1000,
    }
end

-- A request's end, as start and drive hand it to Python: its sockets
-- and semaphore waits are let go of here, so that Python need not cross
-- over to look for them (it still does after a failure or a kill).
local function ended(r, cmd, arg, extra)
    if cmd == "done" then
        if r.cosocket_owner then
            extensions.close_sockets(r)
        end
        if r.parked then
            extensions.release_parked(r)
        end
    end
    return cmd, arg, extra
end

-- Python: r, cmd, arg, extra = start(factory, now, cgi, head, guard_kb);
-- r is false when cmd is "done" (Python needs no handle on a request that
-- is over); nil, "memory" (and nothing started) when the VM holds more
-- than guard_kb (lua_memory_limit's share where a request may not start).
local function start(factory, now, cgi, head, guard_kb)
    if guard_kb > 0 and collectgarbage("count") > guard_kb then
        return nil, "memory", nil, nil
    end
    now_cache = now
    local r = new_request(head, now)
    local fn
    if setfenv then
        fn = factory()
        setfenv(fn, r.env)
    else
        fn = factory(r.env)
    end
    if cgi or extensions.cgi_marked[factory] then
        fn = extensions.cgi_wrap(r, fn) -- cgi.lua: os/io/print for this env only
    end
    local co = co_create(fn)
    r.co = co
    owners[co] = r
    cur = r
    cur_ctx = r
    local cmd, arg, extra = ended(r, step(r, co_resume(r.co)))
    if cmd == "done" then
        return false, cmd, arg, extra
    end
    return r, cmd, arg, extra
end

-- Before resuming a coroutine of the context `ctx` (a request or a timer).
local function enter(ctx, now)
    now_cache = now
    cur_ctx = ctx
    if ctx.timer then
        cur = nil
    else
        cur = ctx
    end
end

-- Python: cmd, arg = drive(r, now, value), r a request or a timer context
local function drive(r, now, value)
    enter(r, now)
    return ended(r, step(r, co_resume(r.co, value)))
end

-- The response for an error inside the script, when headers are not out.
local function abort(r)
    r.dead = true
    r.out = {}
    r.nout = 0
    r.nbuf = 0
    if cur == r then
        cur = nil
    end
    if cur_ctx == r then
        cur_ctx = nil
    end
end

-- Python: ok, err = run_phase(name, src, chunkname) runs config's
-- init_script (name "init": once per VM, before any request) or
-- init_worker_script ("init_worker": once the worker's loop runs) to its
-- end, in the VM's shared globals (what every request's global table falls
-- back to) and outside any context: nothing there may wait.  err is the
-- error with its traceback.
local function phase_error(e)
    if type(e) ~= "string" then
        e = tostring(e)
    end
    -- the script's own frames: not the xpcall below, nor Python's call
    return (gsub(traceback(e, 2), "\n%s*%[C%]: in function '?xpcall'?.*$", ""))
end

local function run_phase(name, src, chunkname)
    if byte(src, 1) == 35 then -- "#!": skipped, as luaL_loadfile does
        src = gsub(src, "^#[^\n]*", "", 1)
    end
    local f, err = loadstring(src, chunkname)
    if not f then
        return false, err
    end
    phase = name
    cur = nil
    cur_ctx = nil
    now_cache = py_update_time() -- ngx.now() there: the time it starts
    local ok
    ok, err = xpcall(f, phase_error)
    phase = nil
    return ok, err
end

-- for thread.lua and socket.lua: which of those phases runs, if any
extensions.phase = function() return phase end

-- for thread.lua: contexts, and their end
extensions.enter = enter
extensions.step = step
extensions.finish = finish
extensions.finish_exit = finish_exit
extensions.fail = fail
extensions.resume = co_resume -- the raw one: coroutine.resume passes I/O yields up
extensions.io_waiting = io_waiting
extensions.passing = passing
extensions.params = params_of -- for cgi.lua
-- filled in by socket.lua and thread.lua: what a request that ended let go of
extensions.close_sockets = function(r) end
extensions.release_parked = function(r) end

return {
    compile = compile,
    start = start,
    drive = drive,
    abort = abort,
    run_phase = run_phase,
    extensions = extensions,
}
