-- Request-free string functions: digests, base64, SQL quoting, URI escaping and
-- query-string parsing (ngx_http_lua_string.c, _args.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local ipairs = ipairs
local select = select
local error = error
local concat = table.concat
local byte = string.byte
local char = string.char
local sub = string.sub
local gsub = string.gsub
local find = string.find
local format = string.format
local getinfo = debug.getinfo

local num2str = core.num2str -- log.lua

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

core.add_arg = add_arg
core.check_max = check_max
core.hex_char = hex_char
core.c_name = c_name
core.parse_args = parse_args
