-- LuaJIT / Lua 5.1 compatibility for the PUC Lua runtimes.
--
-- Loaded by fcgi_lua/lua/runtimes.py into every fresh PUC Lua VM (lua51
-- ... lua55), before the prelude, so that scripts written for OpenResty
-- and the pure-Lua OpenResty libraries Debian ships for LuaJIT only
-- (/usr/share/lua/5.1: nginx.redis, nginx.memcached, nginx.dns,
-- nginx.websocket, nginx.cookie) run unchanged.  It only adds what the
-- runtime lacks; it never replaces a function the runtime has.
--
-- What it adds, when missing: unpack, loadstring, table.getn, table.maxn,
-- math.pow, math.ldexp, math.frexp, math.log10; LuaJIT's `bit` module
-- (global and require "bit"), with its signed 32-bit results; a `require
-- "ffi"` that covers char buffers only (ffi.new("char[?]", n), ffi.string:
-- what lua-resty-websocket uses), anything else in it fails naming itself;
-- the failure mark 5.1 leaves on a module whose loading failed (require);
-- and /usr/share/lua/5.1 on package.path, after the runtime's own
-- /usr/share/lua/5.x.
--
-- What it leaves out, on purpose (docs/runtimes.md): setfenv/getfenv
-- (ngx.lua and sandbox.lua tell 5.1 from 5.2+ by them), module(), the
-- `jit` table (limits.lua tells LuaJIT by it) and the rest of the FFI.

local type = type
local tonumber = tonumber
local tostring = tostring
local select = select
local error = error
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local setmetatable = setmetatable
local concat = table.concat
local format = string.format
local sub = string.sub
local rep = string.rep
local char = string.char
local floor = math.floor
local huge = math.huge
local unpack = unpack or table.unpack
local tointeger = math.tointeger -- 5.3+: bit results are integers, not floats

_G.unpack = unpack

if loadstring == nil then
    -- `load` is looked up on each call, not kept: the sandbox replaces the
    -- global one (text chunks only) and loadstring must follow it.
    function _G.loadstring(s, chunkname)
        return load(s, chunkname)
    end
end

if table.getn == nil then
    function table.getn(t)
        return #t
    end
end

if table.maxn == nil then
    function table.maxn(t)
        local max = 0
        for k in pairs(t) do
            if type(k) == "number" and k > max then
                max = k
            end
        end
        return max
    end
end

if math.pow == nil then
    function math.pow(x, y)
        return x ^ y
    end
end

if math.ldexp == nil then
    function math.ldexp(m, e)
        return m * 2.0 ^ e
    end
end

if math.frexp == nil then
    function math.frexp(x)
        if x == 0 or x ~= x or x == huge or x == -huge then
            return x, 0
        end
        local m, e = x < 0 and -x or x, 0
        while m >= 1 do
            m, e = m / 2, e + 1
        end
        while m < 0.5 do
            m, e = m * 2, e - 1
        end
        return x < 0 and -m or m, e
    end
end

if math.log10 == nil then
    local log = math.log
    function math.log10(x)
        return log(x, 10)
    end
end

---------------------------------------------------------------- require

-- 5.1 and LuaJIT leave a mark in package.loaded when a module fails to
-- load (a top level that yields, or raises), and every later require of
-- it fails with "loop or previous error"; 5.2+ would run the broken top
-- level again on every require.  The OpenResty behaviour, with LuaJIT's
-- wording of the yield error.
if setfenv == nil then
    local c_require = require
    local loaded = package.loaded
    local gsub = string.gsub
    local find = string.find
    local failed = {} -- package.loaded's mark (5.1's is a userdata "sentinel")
    function _G.require(name)
        if loaded[name] == failed then
            error("loop or previous error loading module '" .. tostring(name) .. "'", 0)
        end
        local ok, module = pcall(c_require, name)
        if ok then
            return module
        end
        if loaded[name] == nil and type(name) == "string" then
            -- marked only if found and its top level failed: not when it is
            -- missing or does not compile (5.1 marks it just before the run)
            local quoted = "module '" .. name .. "'"
            local missing = type(module) == "string"
                and (find(module, quoted .. " not found", 1, true)
                     or find(module, "error loading " .. quoted, 1, true))
            if not missing then
                loaded[name] = failed
            end
        end
        if type(module) == "string" then
            module = gsub(module, "attempt to yield across a C%-call boundary",
                          "attempt to yield across C-call boundary")
        end
        error(module, 0)
    end
end

---------------------------------------------------------------- bit

-- LuaJIT's bit module (http://bitop.luajit.org/api.html).  Every argument
-- is converted as LuaJIT does: rounded to the nearest integer (ties to
-- even, by adding 2^52 + 2^51), then taken modulo 2^32; results are signed
-- 32-bit numbers.  Exact for arguments whose magnitude is below 2^51.

local TWO32 = 4294967296
local ROUND = 6755399441055744 -- 2^52 + 2^51

local function u32(x, fname, argn, passed)
    if type(x) ~= "number" then
        local n = tonumber(x)
        if n == nil then
            local got = (x ~= nil or passed) and type(x) or "no value"
            error(format("bad argument #%d to '%s' (number expected, got %s)", argn, fname, got),
                  3)
        end
        x = n
    end
    local u = ((x + ROUND) - ROUND) % TWO32
    if u ~= u then
        return 0 -- NaN and infinities: LuaJIT's conversion gives 0
    end
    return u
end

local function signed(u)
    if u >= 2147483648 then
        u = u - TWO32
    end
    if tointeger then
        return tointeger(u)
    end
    return u
end

-- The operations on unsigned 32-bit values: bit32 (5.2), the native
-- operators (5.3+, compiled from a string so older parsers never see
-- them), or arithmetic (5.1).
local and2, or2, xor2, shl, shr, sar

if bit32 then
    and2, or2, xor2 = bit32.band, bit32.bor, bit32.bxor
    shl, shr, sar = bit32.lshift, bit32.rshift, bit32.arshift
elseif tointeger then
    and2, or2, xor2, shl, shr, sar = load([[
        return function(a, b) return a & b end,
               function(a, b) return a | b end,
               function(a, b) return a ~ b end,
               function(a, n) return (a << n) & 0xffffffff end,
               function(a, n) return a >> n end,
               function(a, n)
                   if a >= 0x80000000 then
                       return ((a >> n) | ~(0xffffffff >> n)) & 0xffffffff
                   end
                   return a >> n
               end
    ]], "=compat.bit")()
else
    local function bitwise(a, b, keep)
        local r, p = 0, 1
        for _ = 1, 32 do
            local x, y = a % 2, b % 2
            if keep(x, y) then
                r = r + p
            end
            a, b, p = (a - x) / 2, (b - y) / 2, p * 2
        end
        return r
    end
    local function both(x, y) return x == 1 and y == 1 end
    local function either(x, y) return x == 1 or y == 1 end
    local function differ(x, y) return x ~= y end
    and2 = function(a, b) return bitwise(a, b, both) end
    or2 = function(a, b) return bitwise(a, b, either) end
    xor2 = function(a, b) return bitwise(a, b, differ) end
    shl = function(a, n) return (a * 2 ^ n) % TWO32 end
    shr = function(a, n) return floor(a / 2 ^ n) end
    sar = function(a, n)
        if a >= 2147483648 then
            return floor(a / 2 ^ n) + (TWO32 - 2 ^ (32 - n))
        end
        return floor(a / 2 ^ n)
    end
end

local function fold(op, fname)
    return function(...)
        local n = select("#", ...)
        local r = u32((...), fname, 1, n > 0)
        if n == 2 then
            return signed(op(r, u32((select(2, ...)), fname, 2, true)))
        end
        for i = 2, n do
            r = op(r, u32((select(i, ...)), fname, i, true))
        end
        return signed(r)
    end
end

local function shift(op, fname)
    return function(x, n)
        return signed(op(u32(x, fname, 1), u32(n, fname, 2) % 32))
    end
end

local function rotate(x, n, fname)
    x = u32(x, fname, 1)
    n = u32(n, fname, 2) % 32
    if fname == "ror" then
        n = (32 - n) % 32
    end
    if n == 0 then
        return signed(x)
    end
    return signed(or2(shl(x, n), shr(x, 32 - n)))
end

if not package.loaded.bit then
    local bit = {
        band = fold(and2, "band"),
        bor = fold(or2, "bor"),
        bxor = fold(xor2, "bxor"),
        lshift = shift(shl, "lshift"),
        rshift = shift(shr, "rshift"),
        arshift = shift(sar, "arshift"),
    }
    function bit.tobit(x)
        return signed(u32(x, "tobit", 1))
    end
    function bit.bnot(x)
        return signed(TWO32 - 1 - u32(x, "bnot", 1))
    end
    function bit.rol(x, n)
        return rotate(x, n, "rol")
    end
    function bit.ror(x, n)
        return rotate(x, n, "ror")
    end
    function bit.bswap(x)
        local u = u32(x, "bswap", 1)
        local b0, b1, b2 = u % 256, floor(u / 256) % 256, floor(u / 65536) % 256
        return signed(((b0 * 256 + b1) * 256 + b2) * 256 + floor(u / 16777216))
    end
    -- LuaJIT 2.1's lib_bit.c: |n| digits at least (zero-padded, the
    -- precision byte of its formatter wraps at 256), the value cut to its
    -- low 4|n| bits; a negative n asks for upper case
    function bit.tohex(x, n)
        local u = u32(x, "tohex", 1)
        local digits, fmt = 8, "%x"
        if n ~= nil then
            digits = signed(u32(n, "tohex", 2))
            if digits < 0 then
                digits, fmt = -digits, "%X"
            end
        end
        if digits < 8 then
            u = u % 16 ^ digits
        end
        local precision = (digits + 1) % 256 - 1
        if precision == 0 and u == 0 then
            return ""
        end
        local s = format(fmt, u)
        if #s < precision then
            s = rep("0", precision - #s) .. s
        end
        return s
    end
    _G.bit = bit
    package.loaded.bit = bit
end

---------------------------------------------------------------- ffi

-- lua-resty-websocket unmasks frames into an ffi char buffer and makes a
-- string of it.  A table indexed from 0 does the same; reads give back
-- what was stored.  Nothing else of the FFI can exist without LuaJIT.

local ffi = { os = "Linux", arch = "x64" }
local char_buffer = setmetatable({}, { __tostring = function() return "ctype<char[?]>" end })
local CHAR_BUFFERS = {
    ["char[?]"] = true,
    ["unsigned char[?]"] = true,
    ["uint8_t[?]"] = true,
    ["int8_t[?]"] = true,
}

local function unavailable(what)
    error(what .. " is not available on " .. _VERSION .. ": fcgi-lua's ffi covers char "
          .. "buffers only (ffi.new(\"char[?]\", n), ffi.string); LuaJIT runtimes have the "
          .. "real one", 3)
end

local function ctype_of(ct)
    if ct == char_buffer then
        return ct
    end
    if type(ct) == "string" and CHAR_BUFFERS[ct:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")] then
        return char_buffer
    end
    unavailable("ffi ctype " .. tostring(ct))
end

function ffi.typeof(ct)
    return ctype_of(ct)
end

function ffi.new(ct, n)
    ctype_of(ct)
    n = tonumber(n)
    if n == nil or n < 0 then
        error("bad argument #2 to 'new' (size of a char[?] expected)", 2)
    end
    return { size = n }
end

function ffi.sizeof(buf)
    if type(buf) == "table" and buf.size then
        return buf.size
    end
    unavailable("ffi.sizeof of " .. tostring(buf))
end

local BYTES_PER_CALL = 4096 -- arguments to one string.char

local function checked_bytes(buf, from, to)
    local t = {}
    for i = from, to do
        t[i - from + 1] = (buf[i] or 0) % 256
    end
    return char(unpack(t, 1, to - from + 1))
end

function ffi.string(buf, len)
    if type(buf) ~= "table" or buf.size == nil then
        unavailable("ffi.string of " .. type(buf))
    end
    if len == nil then -- up to the first NUL
        len = 0
        while len < buf.size and (buf[len] or 0) % 256 ~= 0 do
            len = len + 1
        end
    end
    local parts = {}
    for from = 0, len - 1, BYTES_PER_CALL do
        local to = from + BYTES_PER_CALL - 1
        if to > len - 1 then
            to = len - 1
        end
        local ok, s = pcall(char, unpack(buf, from, to))
        parts[#parts + 1] = ok and s or checked_bytes(buf, from, to)
    end
    return concat(parts)
end

for _, name in ipairs { "cdef", "cast", "load", "metatype", "gc", "istype", "offsetof",
                        "alignof", "copy", "fill", "abi", "errno" } do
    ffi[name] = function() unavailable("ffi." .. name) end
end
ffi.C = setmetatable({}, {
    __index = function(_, name) unavailable("ffi.C." .. tostring(name)) end,
})

if not package.loaded.ffi and not package.preload.ffi then
    package.preload.ffi = function() return ffi end
end

---------------------------------------------------------------- package.path

-- Debian installs the OpenResty libraries for LuaJIT only, under
-- /usr/share/lua/5.1; the runtime's own /usr/share/lua/5.x comes first so
-- that a module built for it wins.  (C modules stay per ABI: cpath is
-- left alone.)
do
    local version = _VERSION:match("%d+%.%d+") or "5.1"
    for _, v in ipairs { version, "5.1" } do
        local dir = "/usr/share/lua/" .. v .. "/"
        if not package.path:find(dir .. "?.lua", 1, true) then
            package.path = package.path .. ";" .. dir .. "?.lua;" .. dir .. "?/init.lua"
        end
    end
end

return true
