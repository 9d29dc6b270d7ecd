-- ngx.exit, ngx.redirect, ngx.exec and what FastCGI cannot have
-- (ngx_http_lua_control.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local error = error
local byte = string.byte
local gsub = string.gsub
local find = string.find
local format = string.format
local match = string.match
local co_yield = coroutine.yield

local IO = core.IO
local log_error = core.log_error -- log.lua
local new_header = core.new_header -- headers.lua
local no_request = core.no_request
local num2str = core.num2str -- log.lua
local set_header = core.set_header -- headers.lua

function ngx.exit(rc)
    local r = core.cur
    if not r and not core.cur_ctx then
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
    local r = core.cur or no_request()
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

local function unavailable(what)
    return function()
        error(what .. " is not available in fcgi-lua: over FastCGI the front server owns "
              .. "the client connection and the location tree", 2)
    end
end


-- ngx.exec: over FastCGI the front server owns the location tree, so the
-- internal redirect is asked of it with X-Accel-Redirect (nginx performs
-- it; the target location should be `internal`).  Lighttpd and Monkey do
-- not honour the header: there the response is an empty 200.
function ngx.exec(uri, args)
    local r = core.cur or no_request()
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

core.unavailable = unavailable
