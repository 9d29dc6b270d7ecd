-- ngx.log and the number formatting every API that prints shares (ngx_http_lua_log.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local error = error
local getmetatable = getmetatable
local concat = table.concat
local format = string.format
local match = string.match
local floor = math.floor
local getinfo = debug.getinfo
local py_log = helpers.log

local NULL = core.NULL

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

-- A line for the error log, from whichever context runs now: Python is
-- handed that context's handle (r.handle: the request carries it, the
-- engine keeps no "current request"), so the line ends with the request's
-- context and, with log_to_stderr, goes to its FCGI_STDERR.  Outside any
-- context (init_script) there is none.
local function log(level, msg)
    local ctx = core.cur_ctx
    return py_log(level, msg, ctx and ctx.handle)
end

local function log_error(msg)
    log(4, msg)
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

-- The text every printing API (ngx.log, ngx.print, ngx.say) gives a
-- string, number, nil, boolean or ngx.null; nil for anything else, which
-- each API refuses or handles in its own way.
local function scalar_text(v)
    local t = type(v)
    if t == "string" then
        return v
    elseif t == "number" then
        return num2str(v)
    elseif t == "nil" then
        return "nil"
    elseif t == "boolean" then
        return v and "true" or "false"
    elseif v == NULL then
        return "null"
    end
    return nil
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
        local text = scalar_text(v)
        if text then
            parts[#parts + 1] = text
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
    log(lv, concat(parts))
end

core.num2str = num2str
core.log_error = log_error
core.log = log
core.scalar_text = scalar_text
